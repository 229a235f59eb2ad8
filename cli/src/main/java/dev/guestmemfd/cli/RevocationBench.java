package dev.guestmemfd.cli;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Lease;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BiConsumer;
import java.util.function.ToLongFunction;
import org.HdrHistogram.Histogram;

/**
 * The figures of issue 13 for {@code gmem bench}: revocation latency through scoped accesses
 * and through a lease side by side, with readers of other pages, and oversubscribed; host copy
 * throughput from one and two threads; the cost of a scoped access over a plain segment read.
 */
final class RevocationBench {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long MIB = 1L << 20;
    static final long FILE = 64 * MIB;
    static final long WINDOW = MIB;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();

    private final boolean quick;
    private final BiConsumer<String, Object[]> say;
    /** Every value read lands here, so that no read can be optimized away. */
    private static final AtomicLong SINK = new AtomicLong();

    RevocationBench(boolean quick, BiConsumer<String, Object[]> say) {
        this.quick = quick;
        this.say = say;
    }

    /**
     * Adds the figures to {@code out}: {@code revocation.scoped}, {@code revocation.lease},
     * {@code revocation.scopedOtherPages}, {@code revocation.scopedOversubscribed},
     * {@code revocation.unreferenced} into the map under {@code revocation} (created if
     * absent), {@code hostCopy} and {@code scopedAccessOverhead} at the top.
     */
    @SuppressWarnings("unchecked")
    static void addTo(Map<String, Object> out, boolean quick, BiConsumer<String, Object[]> say) throws InterruptedException {
        RevocationBench bench = new RevocationBench(quick, say);
        Map<String, Object> revocation = out.get("revocation") instanceof Map<?, ?> m
                ? (Map<String, Object>) m : new LinkedHashMap<>();
        revocation.putAll(bench.revocation());
        out.put("revocation", revocation);
        out.put("hostCopy", bench.hostCopy());
        out.put("scopedAccessOverhead", bench.scopedAccessOverhead());
    }

    private void say(String format, Object... args) {
        say.accept(format, args);
    }

    Map<String, Object> revocation() throws InterruptedException {
        int n = quick ? 300 : 3000;
        say("3b. Revocation latency, scoped accesses and a lease side by side: convert to private a page of a 1 MiB"
                + " window that host threads access (%d conversions each; goals p99 <= 100 us)", n);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("scoped", measure("scoped: one thread accessing the window", n, 1, 0, false));
        out.put("lease", measure("lease: one thread reading the window through a lease", n, 1, 0, true));
        out.put("scopedOtherPages", measure("scoped, plus 8 threads on other pages (4 KiB, then a 10 us wait)", n, 1, 8, false));
        out.put("scopedOversubscribed", measure("oversubscribed: 4 threads spinning on the window, 2 cores (a figure, no goal)",
                n, 4, 0, false));
        out.put("unreferenced", unreferenced(n));
        return out;
    }

    /** Converts random pages of the window to private and back while readers access it. */
    private Map<String, Object> measure(String label, int n, int windowReaders, int otherReaders, boolean lease)
            throws InterruptedException {
        try (GuestMemory memory = GuestMemory.create(FILE, FLAGS, Backing.MEMFD);
             HostMapping map = memory.map(0, FILE)) {
            map.prefault(0, FILE);
            AtomicBoolean stop = new AtomicBoolean();
            AtomicLong windowAccesses = new AtomicLong();
            AtomicLong otherAccesses = new AtomicLong();
            AtomicLong running = new AtomicLong();
            List<Thread> threads = new ArrayList<>();
            for (int i = 0; i < windowReaders; i++) {
                threads.add(Thread.ofPlatform().daemon().start(lease
                        ? () -> leaseReader(map, stop, windowAccesses, running)
                        : () -> scopedReader(map, 0, WINDOW, 0, stop, windowAccesses, running)));
            }
            for (int i = 0; i < otherReaders; i++) {
                long from = 8 * MIB + i * 4 * MIB;
                threads.add(Thread.ofPlatform().daemon().start(
                        () -> scopedReader(map, from, 4 * MIB, 10_000, stop, otherAccesses, running)));
            }
            while (running.get() < windowReaders + otherReaders) {
                Thread.onSpinWait();
            }
            Histogram histogram = new Histogram(3_600_000_000_000L, 3);
            SplittableRandom random = new SplittableRandom(7);
            long refused = 0;
            long unmet = 0;
            for (int i = 0; i < n; i++) {
                // Each conversion starts while the window's readers are at work: without this
                // pause the converting thread takes the file's lock back at once, the readers
                // (who re-lease, or wait at the gate, after each conversion) hardly ever get in,
                // and the figure would time conversions that race with nobody.
                long seen = windowAccesses.get();
                long deadline = System.nanoTime() + 5_000_000;
                while (windowAccesses.get() < seen + windowReaders && System.nanoTime() < deadline) {
                    Thread.yield();
                }
                if (windowAccesses.get() < seen + windowReaders) {
                    unmet++;
                }
                long page = random.nextLong(WINDOW / PAGE) * PAGE;
                long t = System.nanoTime();
                try {
                    memory.convert(page, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                } catch (GuestMemoryException e) {
                    refused++;  // EAGAIN: an access outlived the pin wait
                    continue;
                }
                histogram.recordValue(System.nanoTime() - t);
                memory.convert(page, PAGE, Attribute.SHARED, Content.PRESERVE);
            }
            stop.set(true);
            for (Thread t : threads) {
                t.join();
            }
            Map<String, Object> out = figures(histogram);
            out.put("refused", refused);
            out.put("windowAccesses", windowAccesses.get());
            out.put("otherPageAccesses", otherAccesses.get());
            // Conversions that began without the readers having accessed the window since the
            // last one (they waited 5 ms for it): a sign the figure is not of a contended case.
            out.put("startedWithoutReaderProgress", unmet);
            say("   %-90s p50 %7.1f us  p99 %8.1f us  max %8.1f us", label, histogram.getValueAtPercentile(50) / 1e3,
                    histogram.getValueAtPercentile(99) / 1e3, histogram.getMaxValue() / 1e3);
            return out;
        }
    }

    private static Map<String, Object> figures(Histogram histogram) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("conversions", histogram.getTotalCount());
        out.put("p50Ns", histogram.getValueAtPercentile(50));
        out.put("p99Ns", histogram.getValueAtPercentile(99));
        out.put("maxNs", histogram.getMaxValue());
        return out;
    }

    /** Scoped 4 KiB accesses at random pages of {@code [from, from + bytes)}, each followed by {@code workNs} of other work. */
    private static void scopedReader(HostMapping map, long from, long bytes, long workNs, AtomicBoolean stop,
                                     AtomicLong accesses, AtomicLong running) {
        SplittableRandom random = new SplittableRandom();
        ToLongFunction<MemorySegment> sum = RevocationBench::sum;
        long local = 0;
        running.incrementAndGet();
        while (!stop.get()) {
            long at = from + random.nextLong(bytes / PAGE) * PAGE;
            try {
                local += map.compute(at, PAGE, s -> sum.applyAsLong(s));
                accesses.incrementAndGet();
            } catch (GuestMemoryException privateNowOrBusy) {
                Thread.onSpinWait();
            }
            if (workNs > 0) {
                LockSupport.parkNanos(workNs);  // I/O-like: the thread waits, it does not spin
            }
        }
        SINK.addAndGet(local);
    }

    /** Holds a lease over the window and reads it until the lease is taken away, then leases again. */
    private static void leaseReader(HostMapping map, AtomicBoolean stop, AtomicLong accesses, AtomicLong running) {
        SplittableRandom random = new SplittableRandom();
        long local = 0;
        running.incrementAndGet();
        while (!stop.get()) {
            Lease lease;
            try {
                lease = map.lease(0, WINDOW);
            } catch (GuestMemoryException privateNow) {
                Thread.onSpinWait();
                continue;
            }
            try {
                MemorySegment s = lease.segment();
                while (!stop.get()) {
                    local += sum(s.asSlice(random.nextLong(WINDOW / PAGE) * PAGE, PAGE));
                    accesses.incrementAndGet();
                }
            } catch (IllegalStateException revoked) {
                // the conversion took it
            } finally {
                lease.close();
            }
        }
        SINK.addAndGet(local);
    }

    static long sum(MemorySegment page) {
        long s = 0;
        for (long at = 0; at < page.byteSize(); at += 8) {
            s += page.get(JAVA_LONG, at);
        }
        return s;
    }

    /** Conversions with no host reference over their pages, small and large. */
    private Map<String, Object> unreferenced(int n) {
        Map<String, Object> out = new LinkedHashMap<>();
        try (GuestMemory memory = GuestMemory.create(1L << 30, FLAGS, Backing.MEMFD)) {
            for (long range : new long[] {PAGE, 2 * MIB, 1L << 30}) {
                Histogram histogram = new Histogram(3_600_000_000_000L, 3);
                SplittableRandom random = new SplittableRandom(3);
                for (int i = 0; i < n; i++) {
                    long at = random.nextLong((1L << 30) / range) * range;
                    long t = System.nanoTime();
                    memory.convert(at, range, Attribute.PRIVATE, Content.PRESERVE);
                    histogram.recordValue(System.nanoTime() - t);
                    memory.convert(at, range, Attribute.SHARED, Content.PRESERVE);
                }
                out.put(range + "Bytes", figures(histogram));
                say("   %-90s p50 %7.1f us  p99 %8.1f us", "no host reference, " + range + " bytes (goal <= 2 us, flat)",
                        histogram.getValueAtPercentile(50) / 1e3, histogram.getValueAtPercentile(99) / 1e3);
            }
        }
        return out;
    }

    Map<String, Object> hostCopy() throws InterruptedException {
        long millis = quick ? 300 : 2000;
        say("3c. Host copies (read 64 KiB chunks), no file-wide lock: one thread, then two on disjoint ranges"
                + " (goal: two >= 1.6x one)");
        Map<String, Object> out = new LinkedHashMap<>();
        try (GuestMemory memory = GuestMemory.create(FILE, FLAGS, Backing.MEMFD);
             HostMapping map = memory.map(0, FILE)) {
            map.prefault(0, FILE);
            double one = copyRate(map, 1, millis);
            double two = copyRate(map, 2, millis);
            out.put("oneThreadBytesPerSec", Math.round(one));
            out.put("twoThreadsBytesPerSec", Math.round(two));
            out.put("ratio", Math.round(two / one * 100) / 100.0);
            say("   one thread %.2f GB/s, two threads %.2f GB/s: %.2fx", one / 1e9, two / 1e9, two / one);
        }
        return out;
    }

    private static double copyRate(HostMapping map, int threads, long millis) throws InterruptedException {
        AtomicLong bytes = new AtomicLong();
        AtomicBoolean stop = new AtomicBoolean();
        List<Thread> copiers = new ArrayList<>();
        long chunk = 64 * 1024;
        for (int i = 0; i < threads; i++) {
            long from = i * (FILE / 2);
            copiers.add(Thread.ofPlatform().start(() -> {
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment buffer = arena.allocate(chunk, 4096);
                    long done = 0;
                    long at = 0;
                    while (!stop.get()) {
                        map.read(from + at, buffer);
                        done += chunk;
                        at = (at + chunk) % (FILE / 2);
                    }
                    bytes.addAndGet(done);
                }
            }));
        }
        long t = System.nanoTime();
        Thread.sleep(millis);
        stop.set(true);
        for (Thread c : copiers) {
            c.join();
        }
        return bytes.get() / ((System.nanoTime() - t) / 1e9);
    }

    Map<String, Object> scopedAccessOverhead() {
        int reps = quick ? 200_000 : 2_000_000;
        say("3d. Scoped 4 KiB read against a plain MemorySegment 4 KiB read (goal <= 1.2x)");
        Map<String, Object> out = new LinkedHashMap<>();
        try (GuestMemory memory = GuestMemory.create(FILE, FLAGS, Backing.MEMFD);
             HostMapping map = memory.map(0, FILE);
             Lease lease = map.lease(0, WINDOW)) {
            map.prefault(0, WINDOW);
            MemorySegment plain = lease.segment();  // the same pages, read without the gate
            long pages = WINDOW / PAGE;
            ToLongFunction<MemorySegment> sum = RevocationBench::sum;
            long scopedNs = Long.MAX_VALUE;
            long plainNs = Long.MAX_VALUE;
            long local = 0;
            for (int round = 0; round < 5; round++) {
                long t = System.nanoTime();
                for (int i = 0; i < reps; i++) {
                    long at = (i % pages) * PAGE;
                    local += map.compute(at, PAGE, s -> sum.applyAsLong(s));
                }
                scopedNs = Math.min(scopedNs, System.nanoTime() - t);
                t = System.nanoTime();
                for (int i = 0; i < reps; i++) {
                    local += sum(plain.asSlice((i % pages) * PAGE, PAGE));
                }
                plainNs = Math.min(plainNs, System.nanoTime() - t);
            }
            SINK.addAndGet(local);
            double ratio = (double) scopedNs / plainNs;
            out.put("scopedNsPerRead", Math.round(scopedNs * 10.0 / reps) / 10.0);
            out.put("plainNsPerRead", Math.round(plainNs * 10.0 / reps) / 10.0);
            out.put("ratio", Math.round(ratio * 100) / 100.0);
            say("   scoped %.1f ns, plain %.1f ns per 4 KiB read: %.2fx", scopedNs / (double) reps, plainNs / (double) reps, ratio);
        }
        return out;
    }
}
