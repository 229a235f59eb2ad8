package dev.guestmemfd.cli;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Content;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.HugePagePool;
import dev.guestmemfd.Owner;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.function.BiConsumer;

/**
 * The {@code hugePages} group of {@code gmem bench}: populating guest memory through the
 * library on 2 MiB huge pages, side by side in the same run with {@code memset} of memory
 * already populated (the speed of memory itself) and with the 4 KiB path (a memfd populated
 * through {@code MADV_POPULATE_WRITE}); conversion cost on huge pages against 4 KiB ones; and
 * the minor faults of a first touch of populated huge pages.
 *
 * <p>The pool must hold the file: where it does not and this process runs as root, the group
 * grows the pool for the run and puts the old size back; otherwise it skips with the reason.
 */
final class HugePagesBench {
    static final long HUGE = 2L << 20;
    static final Goal POPULATE_GOAL = Goal.atLeast(0.5, "populate >= 0.5 of memset's bandwidth");
    /** Conversion on huge pages may cost at most this many times the 4 KiB backing's. */
    static final Goal CONVERSION_GOAL = Goal.atMost(1.5, "at most 1.5x the memfd's conversion");
    private static final Path NR_HUGEPAGES = Path.of("/proc/sys/vm/nr_hugepages");

    /** Checks a figure against its goal, records a miss, puts goal and verdict in the row; returns the marker. */
    interface Judge {
        String judge(String figure, Goal goal, double value, Map<String, Object> row);
    }

    private final boolean quick;
    private final BiConsumer<String, Object[]> say;
    private final Judge judge;

    HugePagesBench(boolean quick, BiConsumer<String, Object[]> say, Judge judge) {
        this.quick = quick;
        this.say = say;
        this.judge = judge;
    }

    private void say(String format, Object... args) {
        say.accept(format, args);
    }

    Map<String, Object> run() throws IOException {
        long size = quick ? 64L << 20 : 1L << 30;
        int reps = quick ? 3 : 5;
        Map<String, Object> out = new LinkedHashMap<>();
        say("7. Huge pages: populate %s through the library on HUGETLB_2M, against memset of populated memory and the"
                + " 4 KiB path (median of %d, goal: populate >= 0.5 of memset's bandwidth)", MemoryMapView.human(size), reps);
        long needed = size / HUGE + 2;  // the file, and a little for the conversion file
        long grownFrom = -1;
        HugePagePool pool = HugePagePool.of(HUGE).orElse(null);
        if (pool == null) {
            return skip(out, "this host has no pool of 2 MiB huge pages");
        }
        if (pool.available() < needed) {
            grownFrom = grow(pool, needed);
            pool = HugePagePool.of(HUGE).orElseThrow();
            if (pool.available() < needed) {
                restore(grownFrom);
                return skip(out, "the pool has " + pool.available() + " free 2 MiB pages, the group needs " + needed
                        + (grownFrom < 0 ? " (as root, echo N > /proc/sys/vm/nr_hugepages, or run gmem bench as root)"
                        : " and the kernel gave no more"));
            }
        }
        try {
            measure(out, size, reps);
        } finally {
            restore(grownFrom);
        }
        return out;
    }

    private Map<String, Object> skip(Map<String, Object> out, String why) {
        say("   skipped: %s", why);
        out.put("skipped", why);
        return out;
    }

    /** {@return the pool's size before growing it, or -1 when it could not be grown (not root)} */
    private long grow(HugePagePool pool, long needed) {
        try {
            Files.writeString(NR_HUGEPAGES, Long.toString(pool.total() + needed - pool.available()));
            say("   grew the 2 MiB pool from %d to %s pages for this group", pool.total(), Files.readString(NR_HUGEPAGES).trim());
            return pool.total();
        } catch (IOException | SecurityException e) {
            return -1;
        }
    }

    private void restore(long total) {
        if (total >= 0) {
            try {
                Files.writeString(NR_HUGEPAGES, Long.toString(total));
            } catch (IOException e) {
                say("   could not put the pool back to %d pages: %s", total, e.getMessage());
            }
        }
    }

    private void measure(Map<String, Object> out, long size, int reps) throws IOException {
        long[] populate = new long[reps];
        long[] memset = new long[reps];
        long[] fourK = new long[reps];
        populateOnce(size);  // warm-up: the very first use of pool pages may wait for the hypervisor
        for (int i = 0; i < reps; i++) {
            populate[i] = populateOnce(size);
            memset[i] = memsetOnce(size);
            fourK[i] = populate4kOnce(size);
        }
        BenchCommand.Stats p = BenchCommand.Stats.of(populate);
        BenchCommand.Stats m = BenchCommand.Stats.of(memset);
        BenchCommand.Stats k = BenchCommand.Stats.of(fourK);
        out.put("bytes", size);
        out.put("populate", withBandwidth(p, size));
        out.put("memset", withBandwidth(m, size));
        out.put("populate4k", withBandwidth(k, size));
        Map<String, Object> ratio = new LinkedHashMap<>();
        double vsMemset = round((double) m.median() / p.median());
        ratio.put("value", vsMemset);
        String mark = judge.judge("hugePages populateVsMemset", POPULATE_GOAL, vsMemset, ratio);
        out.put("populateVsMemset", ratio);
        double vs4k = round((double) k.median() / p.median());
        out.put("vs4k", vs4k);
        say("   populate (allocate) on huge pages %9s  %5.1f GB/s", ms(p.median()), gbps(size, p.median()));
        say("   memset of populated memory        %9s  %5.1f GB/s", ms(m.median()), gbps(size, m.median()));
        say("   populate on 4 KiB pages (memfd)   %9s  %5.1f GB/s", ms(k.median()), gbps(size, k.median()));
        say("   populate vs memset %.2f%s; huge pages %.1fx faster than 4 KiB", vsMemset, mark, vs4k);
        out.put("conversion", conversion());
        out.put("firstTouch", firstTouch());
    }

    /** {@return the nanoseconds of populating a new huge page file through the library: allocate} */
    private static long populateOnce(long size) {
        try (GuestMemory memory = GuestMemory.create(size, BenchCommand.FLAGS, Backing.HUGETLB_2M)) {
            long t = System.nanoTime();
            memory.allocate(0, size);
            return System.nanoTime() - t;
        }
    }

    /** {@return the nanoseconds of a memset of a populated huge page file, through the owner's view} */
    private static long memsetOnce(long size) {
        try (GuestMemory memory = GuestMemory.create(size, BenchCommand.FLAGS, Backing.HUGETLB_2M)) {
            memory.allocate(0, size);
            Binding owner = memory.bind(new Owner() { }, 0, size);
            MemorySegment pages = owner.pages();
            long t = System.nanoTime();
            pages.fill((byte) 0x5a);
            return System.nanoTime() - t;
        }
    }

    /** {@return the nanoseconds of the library's populate of a 4 KiB memfd: prefault through a mapping} */
    private static long populate4kOnce(long size) {
        try (GuestMemory memory = GuestMemory.create(size, BenchCommand.FLAGS, Backing.MEMFD);
             HostMapping map = memory.map(0, size)) {
            long t = System.nanoTime();
            map.prefault(0, size);
            return System.nanoTime() - t;
        }
    }

    /** Conversion of 4 KiB and 2 MiB to private and back, on huge pages and on a memfd: the ratio should be about 1. */
    private Map<String, Object> conversion() {
        int reps = quick ? 2_000 : 20_000;
        Map<String, Object> out = new LinkedHashMap<>();
        for (long bytes : new long[] {BenchCommand.PAGE, HUGE}) {
            long huge = convertMedian(Backing.HUGETLB_2M, bytes, reps);
            long small = convertMedian(Backing.MEMFD, bytes, reps);
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("bytes", bytes);
            row.put("hugetlbNs", huge);
            row.put("memfdNs", small);
            double ratio = round((double) huge / Math.max(1, small));
            row.put("ratio", ratio);
            String mark = judge.judge("hugePages conversion " + MemoryMapView.human(bytes), CONVERSION_GOAL, ratio, row);
            say("   conversion of %s: huge pages %.1f us, memfd %.1f us, ratio %.2f%s", MemoryMapView.human(bytes),
                    huge / 1e3, small / 1e3, ratio, mark);
            out.put(bytes == HUGE ? "2MiB" : "4KiB", row);
        }
        return out;
    }

    private static long convertMedian(Backing backing, long bytes, int reps) {
        try (GuestMemory memory = GuestMemory.create(HUGE, BenchCommand.FLAGS, backing)) {
            memory.allocate(0, HUGE);
            long[] ns = new long[reps];
            for (int i = 0; i < reps; i++) {
                long t = System.nanoTime();
                memory.convert(0, bytes, Attribute.PRIVATE, Content.PRESERVE);
                ns[i] = System.nanoTime() - t;
                memory.convert(0, bytes, Attribute.SHARED, Content.PRESERVE);
            }
            return BenchCommand.Stats.of(ns).median();
        }
    }

    /** Minor faults of touching every 4 KiB page of a populated file once, as owner and as host. */
    private Map<String, Object> firstTouch() throws IOException {
        long size = 64L << 20;
        Map<String, Object> out = new LinkedHashMap<>();
        try (GuestMemory memory = GuestMemory.create(size, BenchCommand.FLAGS, Backing.HUGETLB_2M);
             HostMapping map = memory.map(0, size)) {
            memory.allocate(0, size);
            MemorySegment pages = memory.bind(new Owner() { }, 0, size).pages();
            long before = minorFaults();
            for (long at = 0; at < size; at += BenchCommand.PAGE) {
                pages.set(JAVA_BYTE, at, (byte) 1);
            }
            long owner = minorFaults() - before;
            long[] host = new long[1];
            map.access(0, size, segment -> {
                long start = minorFaultsUnchecked();
                for (long at = 0; at < size; at += BenchCommand.PAGE) {
                    segment.set(JAVA_BYTE, at, (byte) 2);
                }
                host[0] = minorFaultsUnchecked() - start;
            });
            out.put("pagesTouched", size / BenchCommand.PAGE);
            out.put("ownerMinorFaults", owner);
            out.put("hostMinorFaults", host[0]);
            say("   first touch of %d populated 4 KiB pages: %d minor faults as owner, %d as host (4 KiB pages: one each)",
                    size / BenchCommand.PAGE, owner, host[0]);
        }
        return out;
    }

    private static long minorFaultsUnchecked() {
        try {
            return minorFaults();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** {@return this thread's minor faults so far ({@code /proc/thread-self/stat}, field 10)} */
    static long minorFaults() throws IOException {
        String stat = Files.readString(Path.of("/proc/thread-self/stat"));
        String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(fields[7]);
    }

    private static Map<String, Object> withBandwidth(BenchCommand.Stats s, long bytes) {
        Map<String, Object> m = s.json();
        m.put("gbPerSecond", round(gbps(bytes, s.median())));
        return m;
    }

    private static double gbps(long bytes, long ns) {
        return bytes / (double) ns;
    }

    private static String ms(long ns) {
        return String.format(Locale.ROOT, "%.1f ms", ns / 1e6);
    }

    private static double round(double v) {
        return Math.round(v * 1000) / 1000.0;
    }
}
