package dev.guestmemfd;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.testing.RequiresBacking;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.Pipe;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Host threads read and write through leases, copies, scoped accesses and pins while other
 * threads convert, punch and allocate, and a guest writes secrets into its private pages.
 * Segments are also held by native calls (NIO reads and writes blocked on pipes, released at
 * random), and other threads close leases, pins and mappings at every step; at the end the
 * file is closed under segments still held. A reference monitor, plugged in as the owner,
 * records who owns each page and counts every violation.
 */
class ConversionRaceTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final int PAGES = 32;
    static final long SECRET = 0x5ec2e7_5ec2e7L;
    static final long HOST = 0x4057_4057L;
    static final Duration RUN = Duration.ofMillis(1500);

    /** The owner: who owns each page, and every breach of the rules it sees. */
    static final class ReferenceMonitor implements Owner {
        final boolean[] guestOwned = new boolean[PAGES];
        final boolean[] invalidating = new boolean[PAGES];
        final boolean[] guestWroteSecret = new boolean[PAGES];
        final List<String> violations = new CopyOnWriteArrayList<>();
        final Set<Object> liveHostReferences = ConcurrentHashMap.newKeySet();
        Binding binding;

        ReferenceMonitor(boolean startPrivate) {
            java.util.Arrays.fill(guestOwned, startPrivate);
        }

        @Override
        public synchronized void invalidateBegin(Binding b, long offset, long length, Invalidation why) {
            for (long p = offset / PAGE; p < (offset + length) / PAGE; p++) {
                invalidating[(int) p] = true;
                guestWroteSecret[(int) p] = false;  // the guest loses its mapping: contents may change
            }
        }

        @Override
        public synchronized void invalidateEnd(Binding b, long offset, long length, Invalidation why) {
            for (long p = offset / PAGE; p < (offset + length) / PAGE; p++) {
                invalidating[(int) p] = false;
            }
        }

        @Override
        public synchronized void prepareInaccessible(Binding b, long offset, long length, Content content) {
            for (long p = offset / PAGE; p < (offset + length) / PAGE; p++) {
                if (!invalidating[(int) p]) {
                    violations.add("page " + p + " made private without invalidation");
                }
                for (Object ref : liveHostReferences) {
                    if (ref instanceof Lease l && l.isValid() && overlaps(l.fileOffset(), l.length(), p)) {
                        violations.add("page " + p + " given to the guest while a lease still maps it");
                    }
                    if (ref instanceof Pin pin && overlaps(pin.offset(), pin.length(), p)) {
                        violations.add("page " + p + " given to the guest while pinned");
                    }
                }
                guestOwned[(int) p] = true;
            }
        }

        @Override
        public synchronized void prepareAccessible(Binding b, long offset, long length, Content content) {
            for (long p = offset / PAGE; p < (offset + length) / PAGE; p++) {
                if (!invalidating[(int) p]) {
                    violations.add("page " + p + " made shared without invalidation");
                }
                guestOwned[(int) p] = false;
            }
        }

        static boolean overlaps(long offset, long length, long page) {
            return offset < (page + 1) * PAGE && page * PAGE < offset + length;
        }

        /** The guest touches a page it owns: checks its secret is intact, writes it again. */
        synchronized boolean guestTouch(int p) {
            if (!guestOwned[p] || invalidating[p]) {
                return false;
            }
            MemorySegment page = binding.pages().asSlice(p * PAGE, PAGE);
            // Host code writes its pattern at 0 (native reads), 8 (leases), 16 (pins), 24 (scoped, copies).
            for (long at = 0; at < 32; at += 8) {
                if (guestWroteSecret[p] && page.get(JAVA_LONG, at) != SECRET) {
                    violations.add("private page " + p + " changed under the guest at +" + at + ": 0x"
                            + Long.toHexString(page.get(JAVA_LONG, at)));
                }
                page.set(JAVA_LONG, at, SECRET);
            }
            guestWroteSecret[p] = true;
            return true;
        }
    }

    /** Closes the file while native calls hold its segments: it must neither throw nor leave the fd open. */
    static void closeUnderHeldSegments(AutoCloseable memory) throws Exception {
        memory.close();
        assertThat(((GuestMemory) memory).isClosed()).isTrue();
    }

    /**
     * A native call blocked mid-call on a pipe with a lease's or pin's segment: a read into it
     * (it will write the host's pattern at offset 0) or a write from it (behind a full pipe;
     * what it sends is what the segment reaches when the pipe drains).
     */
    static final class HeldIo {
        static final AtomicLong REVOKED_WHILE_HELD = new AtomicLong();
        final AutoCloseable ref;
        final Pipe pipe;
        final boolean intoSegment;
        final Thread thread;
        final ReferenceMonitor monitor;

        HeldIo(AutoCloseable ref, MemorySegment segment, boolean intoSegment, ReferenceMonitor monitor) throws IOException {
            this.ref = ref;
            this.monitor = monitor;
            this.intoSegment = intoSegment;
            this.pipe = Pipe.open();
            if (segment == null) {
                segment = ((Pin) ref).segment();
            }
            ByteBuffer buffer = segment.asSlice(0, 8).asByteBuffer();
            if (!intoSegment) {
                pipe.sink().configureBlocking(false);
                ByteBuffer filler = ByteBuffer.allocateDirect(1 << 16);
                while (pipe.sink().write(filler.clear()) > 0) {
                    // fill the pipe so that the write from the segment blocks
                }
                pipe.sink().configureBlocking(true);
            }
            thread = Thread.ofPlatform().daemon().start(() -> {
                try {
                    if (intoSegment) {
                        pipe.source().read(buffer);
                    } else {
                        while (buffer.hasRemaining()) {
                            pipe.sink().write(buffer);
                        }
                    }
                } catch (IOException e) {
                    // the pipe closed: the call ended
                } catch (IllegalStateException revokedBeforeTheCall) {
                    // the reference was revoked or closed before the call began: it never held it
                }
            });
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (!inNativeCall(thread) && thread.isAlive() && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
        }

        /** Ends the call: feeds or drains the pipe, checks what a write sent, then closes the reference. */
        void release() throws Exception {
            if (ref instanceof Lease lease && !lease.isValid() && thread.isAlive()) {
                REVOKED_WHILE_HELD.incrementAndGet();
            }
            if (intoSegment) {
                ByteBuffer data = ByteBuffer.allocate(8).order(java.nio.ByteOrder.nativeOrder()).putLong(0, HOST);
                while (data.hasRemaining()) {
                    pipe.sink().write(data);
                }
            } else {
                // Drain the filler and the 8 bytes the call sends from the segment, the last ones through the pipe.
                pipe.source().configureBlocking(false);
                ByteBuffer drain = ByteBuffer.allocate(1 << 16);
                java.io.ByteArrayOutputStream sent = new java.io.ByteArrayOutputStream();
                long deadline = System.nanoTime() + 10_000_000_000L;
                while (System.nanoTime() < deadline) {
                    int n = pipe.source().read(drain.clear());
                    if (n > 0) {
                        sent.write(drain.array(), 0, n);
                    } else if (!thread.isAlive() && pipe.source().read(drain.clear()) <= 0) {
                        break;
                    } else {
                        Thread.onSpinWait();
                    }
                }
                byte[] bytes = sent.toByteArray();
                if (bytes.length >= 8 && ByteBuffer.wrap(bytes, bytes.length - 8, 8).order(java.nio.ByteOrder.nativeOrder())
                        .getLong() == SECRET) {
                    monitor.violations.add("a native write sent a secret from a held segment");
                }
            }
            thread.join(10_000);
            if (thread.isAlive()) {
                monitor.violations.add("a held native call did not end");
            }
            ref.close();
            pipe.sink().close();
            pipe.source().close();
        }

        static boolean inNativeCall(Thread t) {
            for (StackTraceElement e : t.getStackTrace()) {
                if (e.isNativeMethod()) {
                    return true;
                }
            }
            return false;
        }
    }

    @ParameterizedTest
    @EnumSource(Backing.class)
    @RequiresBacking
    void noHostThreadEverSeesOrTouchesAPrivatePage(Backing backing) throws Exception {
        long flags = Flag.MMAP.bit() | Flag.INIT_SHARED.bit() | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
        // On huge pages the race runs in the first PAGES pages of one huge page.
        try (GuestMemory memory = GuestMemory.create(Math.max(PAGES * PAGE, backing.blockSize()), flags, backing)) {
            memory.pinWait(Duration.ofMillis(2));
            ReferenceMonitor monitor = new ReferenceMonitor(false);
            monitor.binding = memory.bind(monitor, 0, PAGES * PAGE);
            AtomicReference<HostMapping> mappings = new AtomicReference<>(memory.map(0, PAGES * PAGE));
            AtomicBoolean stop = new AtomicBoolean();
            AtomicLong hostReads = new AtomicLong();
            AtomicLong hostFaults = new AtomicLong();
            AtomicLong revokedMidUse = new AtomicLong();
            AtomicLong conversions = new AtomicLong();
            AtomicLong refusedForPins = new AtomicLong();
            AtomicLong guestWrites = new AtomicLong();
            List<Throwable> unexpected = new CopyOnWriteArrayList<>();

            Runnable host = () -> {
                ThreadLocalRandom rnd = ThreadLocalRandom.current();
                while (!stop.get()) {
                    int p = rnd.nextInt(PAGES);
                    int n = 1 + rnd.nextInt(Math.min(4, PAGES - p));
                    HostMapping mapping = mappings.get();
                    try {
                        switch (rnd.nextInt(5)) {
                            case 0 -> {
                                try (Lease lease = mapping.lease(p * PAGE, n * PAGE)) {
                                    monitor.liveHostReferences.add(lease);
                                    try {
                                        MemorySegment s = lease.segment();
                                        for (int i = 0; i < 200; i++) {
                                            long at = rnd.nextInt(n) * PAGE;
                                            if (s.get(JAVA_LONG, at) == SECRET) {
                                                monitor.violations.add("host read a secret through a lease at page " + (p + at / PAGE));
                                            }
                                            s.set(JAVA_LONG, at + 8, HOST);
                                            hostReads.incrementAndGet();
                                        }
                                    } catch (IllegalStateException revoked) {
                                        revokedMidUse.incrementAndGet();
                                    } finally {
                                        monitor.liveHostReferences.remove(lease);
                                    }
                                }
                            }
                            case 3 -> mapping.access(p * PAGE, n * PAGE, s -> {
                                for (int i = 0; i < 50; i++) {
                                    long at = rnd.nextInt(n) * PAGE;
                                    if (s.get(JAVA_LONG, at) == SECRET) {
                                        monitor.violations.add("host read a secret through a scoped access at page " + (p + at / PAGE));
                                    }
                                    s.set(JAVA_LONG, at + 24, HOST);
                                    hostReads.incrementAndGet();
                                }
                            });
                            case 4 -> {
                                mapping.write(p * PAGE + 24, MemorySegment.ofArray(new long[] {HOST}));
                                hostReads.incrementAndGet();
                            }
                            case 1 -> {
                                byte[] data = mapping.read(p * PAGE, (int) (n * PAGE));
                                MemorySegment s = MemorySegment.ofArray(data);
                                for (int i = 0; i < n; i++) {
                                    if (s.get(JAVA_LONG.withByteAlignment(1), i * PAGE) == SECRET) {
                                        monitor.violations.add("host read a secret through a copy at page " + (p + i));
                                    }
                                }
                                hostReads.incrementAndGet();
                            }
                            default -> {
                                try (Pin pin = memory.pin(p * PAGE, n * PAGE)) {
                                    monitor.liveHostReferences.add(pin);
                                    try {
                                        if (pin.segment().get(JAVA_LONG, 0) == SECRET) {
                                            monitor.violations.add("host read a secret through a pin at page " + p);
                                        }
                                        pin.segment().set(JAVA_LONG, 16, HOST);
                                        hostReads.incrementAndGet();
                                    } finally {
                                        monitor.liveHostReferences.remove(pin);
                                    }
                                }
                            }
                        }
                    } catch (HostAccessFault fault) {
                        hostFaults.incrementAndGet();
                    } catch (GuestMemoryException e) {
                        if (!e.errno().equals(Errno.EFAULT)) {
                            unexpected.add(e);
                        }
                        hostFaults.incrementAndGet();
                    } catch (Throwable t) {
                        unexpected.add(t);
                    }
                }
            };
            Runnable converter = () -> {
                ThreadLocalRandom rnd = ThreadLocalRandom.current();
                while (!stop.get()) {
                    int p = rnd.nextInt(PAGES);
                    int n = 1 + rnd.nextInt(Math.min(8, PAGES - p));
                    try {
                        switch (rnd.nextInt(6)) {
                            case 0 -> memory.punchHole(p * PAGE, n * PAGE);
                            case 1 -> memory.allocate(p * PAGE, n * PAGE);
                            case 2, 3 -> memory.convert(p * PAGE, n * PAGE, Attribute.PRIVATE,
                                    rnd.nextBoolean() ? Content.UNSPECIFIED : Content.PRESERVE);
                            default -> memory.convert(p * PAGE, n * PAGE, Attribute.SHARED, Content.ZERO);
                        }
                        conversions.incrementAndGet();
                    } catch (GuestMemoryException e) {
                        if (e.errno().equals(Errno.EAGAIN)) {
                            refusedForPins.incrementAndGet();
                        } else {
                            unexpected.add(e);
                        }
                    } catch (Throwable t) {
                        unexpected.add(t);
                    }
                }
            };
            Runnable guest = () -> {
                ThreadLocalRandom rnd = ThreadLocalRandom.current();
                while (!stop.get()) {
                    if (monitor.guestTouch(rnd.nextInt(PAGES))) {
                        guestWrites.incrementAndGet();
                    }
                    Thread.onSpinWait();
                }
            };
            List<HeldIo> held = new CopyOnWriteArrayList<>();
            AtomicLong nativeHolds = new AtomicLong();
            Runnable nativeHolder = () -> {
                ThreadLocalRandom rnd = ThreadLocalRandom.current();
                while (!stop.get()) {
                    int p = rnd.nextInt(PAGES);
                    try {
                        AutoCloseable ref;
                        MemorySegment segment;
                        if (rnd.nextBoolean()) {
                            Lease lease = mappings.get().lease(p * PAGE, PAGE);
                            ref = lease;
                            segment = lease.segment();
                        } else {
                            Pin pin = memory.pin(p * PAGE, PAGE);
                            ref = pin;
                            segment = pin.segment();
                        }
                        held.add(new HeldIo(ref, segment, rnd.nextBoolean(), monitor));
                        nativeHolds.incrementAndGet();
                    } catch (GuestMemoryException e) {
                        if (!e.errno().equals(Errno.EFAULT)) {
                            unexpected.add(e);
                        }
                    } catch (Throwable t) {
                        unexpected.add(t);
                    }
                    // Let go of some: the call ends at a random moment, before or after its reference was closed or revoked.
                    while (held.size() > 3 || (!held.isEmpty() && rnd.nextInt(3) == 0)) {
                        HeldIo io = held.remove(rnd.nextInt(held.size()));
                        try {
                            io.release();
                        } catch (Throwable t) {
                            unexpected.add(t);
                        }
                    }
                }
            };
            Runnable closer = () -> {
                ThreadLocalRandom rnd = ThreadLocalRandom.current();
                while (!stop.get()) {
                    try {
                        if (rnd.nextInt(20) == 0) {
                            mappings.getAndSet(memory.map(0, PAGES * PAGE)).close();
                        } else {
                            List<HeldIo> now = List.copyOf(held);
                            if (!now.isEmpty()) {
                                now.get(rnd.nextInt(now.size())).ref.close();  // closes a segment a native call holds
                            }
                        }
                    } catch (Throwable t) {
                        unexpected.add(t);
                    }
                    java.util.concurrent.locks.LockSupport.parkNanos(200_000);
                }
            };
            List<Thread> threads = List.of(Thread.ofPlatform().start(host), Thread.ofPlatform().start(host),
                    Thread.ofPlatform().start(converter), Thread.ofPlatform().start(guest),
                    Thread.ofPlatform().start(nativeHolder), Thread.ofPlatform().start(closer));
            Thread.sleep(RUN);
            stop.set(true);
            for (Thread t : threads) {
                t.join();
            }
            // The file closes under segments that native calls still hold; then the calls end.
            List<HeldIo> stillHeld = List.copyOf(held);
            if (stillHeld.isEmpty()) {
                try {
                    stillHeld = List.of(new HeldIo(memory.pin(0, PAGE), null, true, monitor));
                } catch (GuestMemoryException e) {
                    stillHeld = List.of();
                }
            }
            mappings.get().close();
            closeUnderHeldSegments(memory);
            for (HeldIo io : stillHeld) {
                io.release();
            }

            assertThat(unexpected).as("unexpected failures").isEmpty();
            assertThat(monitor.violations).as("violations seen by the reference monitor").isEmpty();
            // The run must really have raced, or it proves nothing.
            assertThat(conversions.get()).as("conversions").isGreaterThan(100);
            assertThat(hostReads.get()).as("host accesses").isGreaterThan(1000);
            assertThat(hostFaults.get()).as("host faults on private pages").isPositive();
            assertThat(guestWrites.get()).as("guest writes").isGreaterThan(100);
            assertThat(nativeHolds.get()).as("segments held by native calls").isPositive();
            System.out.printf("%s: %d conversions (%d refused for pins), %d host accesses, %d faults, %d leases revoked mid-use, %d guest writes, %d native holds (%d leases so far revoked or closed mid-call)%n",
                    backing, conversions.get(), refusedForPins.get(), hostReads.get(), hostFaults.get(), revokedMidUse.get(), guestWrites.get(),
                    nativeHolds.get(), HeldIo.REVOKED_WHILE_HELD.get());
        }
    }
}
