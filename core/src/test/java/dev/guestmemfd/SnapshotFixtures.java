package dev.guestmemfd;

import dev.guestmemfd.testing.TestKeys;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import javax.crypto.SecretKey;

/** Streams, targets, state captures and host pollers shared by the snapshot tests. */
final class SnapshotFixtures {
    static final long PAGE = GuestMemory.PAGE_SIZE;

    private SnapshotFixtures() {
    }

    static SecretKey key() {
        return TestKeys.aes256();
    }

    /** {@return flags for a mappable file on {@code backing}, shared or private at first} */
    static long flags(Backing backing, boolean initShared) {
        return Flag.MMAP.bit() | (initShared ? Flag.INIT_SHARED.bit() : 0)
                | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
    }

    /** {@return a page of {@code pattern} repeated} */
    static byte[] page(byte[] pattern) {
        byte[] page = new byte[(int) PAGE];
        for (int i = 0; i < page.length; i++) {
            page[i] = pattern[i % pattern.length];
        }
        return page;
    }

    static byte[] page(int fill) {
        byte[] page = new byte[(int) PAGE];
        Arrays.fill(page, (byte) fill);
        return page;
    }

    /**
     * The pre-copy stream of the issue, for every page at once: round one carries each page
     * sealed, holding {@code secret}; then the guest shares them (ZERO) and the host writes
     * {@code clear}; round two carries them in the clear. A restore's final state shows
     * {@code clear} everywhere.
     */
    static byte[] sealedThenClear(long pages, byte[] secret, byte[] clear, SecretKey key) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory source = GuestMemory.create(pages * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD);
             ChangeLog changes = source.trackChanges()) {
            Binding owner = source.bind(new Owner() { }, 0, pages * PAGE);
            source.convert(0, pages * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            for (long x = 0; x < pages; x++) {
                owner.pages().asSlice(x * PAGE, PAGE).copyFrom(MemorySegment.ofArray(secret));
            }
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), key, out);
            changes.drain();
            writer.writeAll();
            source.convert(0, pages * PAGE, Attribute.SHARED, Content.ZERO);
            try (HostMapping host = source.map(0, pages * PAGE)) {
                for (long x = 0; x < pages; x++) {
                    host.write(x * PAGE, clear);
                }
            }
            writer.writePages(changes.drain());
            writer.finish();
        }
        return out.toByteArray();
    }

    /**
     * {@return the stream of a file whose page {@code x} is private, holding {@code secret},
     * cut before its end record, with one forged shared record of page {@code x} appended}
     */
    static byte[] cutWithForgedClearRecord(long pages, long x, byte[] secret, byte[] forged, SecretKey key) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory source = GuestMemory.create(pages * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD)) {
            Binding owner = source.bind(new Owner() { }, 0, pages * PAGE);
            source.convert(x * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(x * PAGE, PAGE).copyFrom(MemorySegment.ofArray(secret));
            Snapshot.write(owner, key, out);
        }
        byte[] whole = out.toByteArray();
        int cut = whole.length - SnapshotFormat.TRAILER_BYTES - 1 - 8;
        ByteArrayOutputStream forgedStream = new ByteArrayOutputStream();
        forgedStream.write(whole, 0, cut);
        java.io.DataOutputStream record = new java.io.DataOutputStream(forgedStream);
        record.writeByte(SnapshotFormat.SHARED);
        record.writeLong(x * PAGE);
        record.writeInt((int) PAGE);
        record.write(forged);
        return forgedStream.toByteArray();
    }

    /**
     * What a refused restore must leave as it found: each page's attribute, whether it holds
     * data, and a digest of every page's bytes (a hole counts as zeros; it is not read, which
     * would allocate it). On a backing that cannot free part of a file (memfd_secret) or of a
     * huge page (hugetlb), an allocated page that reads zero holds no data: that is what a
     * punch leaves there.
     */
    record TargetState(String pages, String digest) {
        static TargetState of(GuestMemory memory) {
            StringBuilder pages = new StringBuilder();
            MessageDigest sha = SnapshotFormat.sha256();
            byte[] zero = new byte[(int) PAGE];
            for (PageRun run : memory.pageRuns()) {
                for (long p = run.offset(); p < run.offset() + run.length(); p += PAGE) {
                    byte[] bytes = run.allocated() ? memory.pages().asSlice(p, PAGE).toArray(ValueLayout.JAVA_BYTE) : zero;
                    boolean data = run.allocated() && (memory.returnsPunchedMemory() || !Arrays.equals(bytes, zero));
                    pages.append(run.attribute() == Attribute.PRIVATE ? (data ? 'P' : 'p') : (data ? 'S' : 's'));
                    sha.update(bytes);
                }
            }
            return new TargetState(pages.toString(), HexFormat.of().formatHex(sha.digest()));
        }
    }

    /**
     * Host code that reads every page of a mapping, one page at a time, over and over, and
     * counts the reads that returned a page beginning with a secret's first 16 bytes. Private
     * pages fault, as they must; the poller goes on. It polls the mapping last given to
     * {@link #poll}, so one thread can follow a target that is replaced, and idles without one.
     */
    static final class HostPoller implements AutoCloseable {
        private final AtomicBoolean stop = new AtomicBoolean();
        private final AtomicLong secretsSeen = new AtomicLong();
        private final AtomicLong reads = new AtomicLong();
        private final Thread thread;
        private final List<Throwable> failures = new ArrayList<>();
        private volatile HostMapping current;

        HostPoller(List<byte[]> secrets) {
            byte[][] prefixes = secrets.stream().map(s -> Arrays.copyOf(s, 16)).toArray(byte[][]::new);
            thread = Thread.ofPlatform().daemon().name("host-poller").start(() -> {
                try {
                    byte[] page = new byte[(int) PAGE];
                    MemorySegment into = MemorySegment.ofArray(page);
                    while (!stop.get()) {
                        HostMapping host = current;
                        if (host == null) {
                            Thread.onSpinWait();
                            continue;
                        }
                        for (long p = 0; p < host.length() && !stop.get(); p += PAGE) {
                            try {
                                host.read(p, into);
                                reads.incrementAndGet();
                                for (byte[] prefix : prefixes) {
                                    if (Arrays.equals(page, 0, 16, prefix, 0, 16)) {
                                        secretsSeen.incrementAndGet();
                                    }
                                }
                            } catch (GuestMemoryException refused) {
                                // a private page (as it must be), or a mapping or file closed under it
                            }
                        }
                    }
                } catch (RuntimeException | Error e) {
                    synchronized (failures) {
                        failures.add(e);
                    }
                }
            });
        }

        /** Polls {@code host} from now on; null to idle. */
        void poll(HostMapping host) {
            current = host;
        }

        /** {@return the reads that returned private plaintext so far} */
        long secretsSeen() {
            return secretsSeen.get();
        }

        /** {@return the reads that returned a page (were not refused)} */
        long reads() {
            return reads.get();
        }

        @Override
        public void close() {
            stop();
        }

        /** Stops polling, waits for the thread, and rethrows what failed in it. Idempotent. */
        void stop() {
            stop.set(true);
            try {
                thread.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            synchronized (failures) {
                if (!failures.isEmpty()) {
                    throw new AssertionError("the host poller failed", failures.getFirst());
                }
            }
        }
    }
}
