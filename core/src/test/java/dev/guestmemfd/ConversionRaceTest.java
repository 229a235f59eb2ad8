package dev.guestmemfd;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.testing.RequiresBacking;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Host threads read and write through leases, copies and pins while other threads convert,
 * punch and allocate, and a guest writes secrets into its private pages. A reference
 * monitor, plugged in as the owner, records who owns each page and counts every violation.
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
            if (guestWroteSecret[p] && page.get(JAVA_LONG, 0) != SECRET) {
                violations.add("private page " + p + " changed under the guest: 0x" + Long.toHexString(page.get(JAVA_LONG, 0)));
            }
            page.set(JAVA_LONG, 0, SECRET);
            guestWroteSecret[p] = true;
            return true;
        }
    }

    @ParameterizedTest
    @EnumSource(Backing.class)
    @RequiresBacking
    void noHostThreadEverSeesOrTouchesAPrivatePage(Backing backing) throws Exception {
        long flags = Flag.MMAP.bit() | Flag.INIT_SHARED.bit() | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
        try (GuestMemory memory = GuestMemory.create(PAGES * PAGE, flags, backing)) {
            memory.pinWait(Duration.ofMillis(2));
            ReferenceMonitor monitor = new ReferenceMonitor(false);
            monitor.binding = memory.bind(monitor, 0, PAGES * PAGE);
            HostMapping mapping = memory.map(0, PAGES * PAGE);
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
                    try {
                        switch (rnd.nextInt(3)) {
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
                                    rnd.nextBoolean() ? Content.ZERO : Content.PRESERVE);
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
            List<Thread> threads = List.of(Thread.ofPlatform().start(host), Thread.ofPlatform().start(host),
                    Thread.ofPlatform().start(converter), Thread.ofPlatform().start(guest));
            Thread.sleep(RUN);
            stop.set(true);
            for (Thread t : threads) {
                t.join();
            }
            mapping.close();

            assertThat(unexpected).as("unexpected failures").isEmpty();
            assertThat(monitor.violations).as("violations seen by the reference monitor").isEmpty();
            // The run must really have raced, or it proves nothing.
            assertThat(conversions.get()).as("conversions").isGreaterThan(100);
            assertThat(hostReads.get()).as("host accesses").isGreaterThan(1000);
            assertThat(hostFaults.get()).as("host faults on private pages").isPositive();
            assertThat(guestWrites.get()).as("guest writes").isGreaterThan(100);
            System.out.printf("%s: %d conversions (%d refused for pins), %d host accesses, %d faults, %d leases revoked mid-use, %d guest writes%n",
                    backing, conversions.get(), refusedForPins.get(), hostReads.get(), hostFaults.get(), revokedMidUse.get(), guestWrites.get());
        }
    }
}
