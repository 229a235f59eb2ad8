package dev.guestmemfd.cli;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Lease;
import dev.guestmemfd.kvm.GuestLayout;
import dev.guestmemfd.kvm.GuestProgram;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Machine;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.HdrHistogram.Histogram;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code gmem bench}: the library side by side with the kernel, in one run, as ratios.
 * The kernel side is {@code benchmarks/c/kernel_bench.c}, built here with gcc.
 */
@Command(name = "bench", mixinStandardHelpOptions = true, description = {
    "Measure the library against the kernel on the same work, conversion cost and rate,",
    "revocation latency, metadata, and a guest's speed. Figures are noisy here: compare ratios."})
final class BenchCommand implements Callable<Integer> {
    static final long MIB = 1L << 20;
    static final long GIB = 1L << 30;
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();

    @Option(names = "--quick", description = "Smaller sizes and fewer repetitions: under a minute.")
    boolean quick;

    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Option(names = "--group", paramLabel = "NAME", description = "Run only this group of figures (e.g. hugePages).")
    String group;

    private Path kernelBench;
    private String kernelBenchProblem;
    private final List<String> text = new ArrayList<>();
    /** Figures that missed their goal, as "group: figure". */
    private final List<String> missed = new ArrayList<>();

    /** Checks {@code value} against {@code goal}: records a miss, puts goal and verdict in {@code row}, returns the text marker. */
    private String judge(String figure, Goal goal, double value, Map<String, Object> row) {
        boolean met = goal.met(value);
        row.put("goal", goal.text());
        row.put("goalMet", met);
        if (!met) {
            missed.add(figure);
        }
        return goal.mark(value);
    }

    @Override
    public Integer call() throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("date", LocalDate.now().toString());
        out.put("quick", quick);
        out.put("machine", machine());
        out.put("note", "noisy machine (shared, nested virtualization): compare ratios within this run, not absolute times");
        if (group == null) {
            buildKernelBench();
            out.put("overhead", overhead());
            out.put("conversionCost", conversionCost());
            out.put("conversionRate", conversionRate());
            out.put("revocation", revocation());
            RevocationBench.addTo(out, quick, this::say);  // scoped vs lease revocation, host copies, scoped overhead
            out.put("metadata", metadata());
            out.put("guest", guest());
        }
        if (group == null || group.equals("hugePages")) {
            out.put("hugePages", new HugePagesBench(quick, this::say, this::judge).run());
        } else {
            throw new picocli.CommandLine.ParameterException(new picocli.CommandLine(this),
                    "unknown group '" + group + "': the one group run alone is hugePages");
        }
        out.put("goalsMissed", missed);
        if (json) {
            System.out.println(Json.write(out));
        } else {
            text.forEach(System.out::println);
            System.out.println(missed.isEmpty() ? "every goal met" : "goals missed (" + Goal.MISSED + "): " + String.join(", ", missed));
        }
        return 0;
    }

    private void say(String format, Object... args) {
        text.add(String.format(Locale.ROOT, format, args));
    }

    private static Map<String, Object> machine() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("cores", Runtime.getRuntime().availableProcessors());
        m.put("java", Runtime.version().toString());
        try {
            m.put("kernel", Files.readString(Path.of("/proc/sys/kernel/osrelease")).trim());
        } catch (IOException e) {
            m.put("kernel", "unknown");
        }
        return m;
    }

    // ------------------------------------------------------------------ kernel side

    private void buildKernelBench() {
        Path source = Path.of(System.getProperty("gmem.root", ".")).resolve("benchmarks/c/kernel_bench.c");
        if (!Files.exists(source)) {
            kernelBenchProblem = "no " + source + " (run gmem from the repository)";
            return;
        }
        try {
            Path out = Files.createTempDirectory("gmem-bench").resolve("kernel_bench");
            Process p = new ProcessBuilder("gcc", "-O2", "-o", out.toString(), source.toString())
                    .redirectErrorStream(true).start();
            String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (p.waitFor() != 0) {
                kernelBenchProblem = "gcc failed: " + log.strip();
                return;
            }
            kernelBench = out;
        } catch (IOException | InterruptedException e) {
            kernelBenchProblem = "no gcc: " + e.getMessage();
        }
    }

    /** {@return the values of the kernel side's "key=N" output} */
    private Map<String, Long> runKernelBench(String... args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>();
        command.add(kernelBench.toString());
        command.addAll(Arrays.asList(args));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
        if (p.waitFor() != 0) {
            throw new IOException("kernel_bench " + String.join(" ", args) + ": " + output);
        }
        Map<String, Long> values = new LinkedHashMap<>();
        for (String field : output.split("\\s+")) {
            String[] kv = field.split("=");
            values.put(kv[0], Long.parseUnsignedLong(kv[1]));
        }
        return values;
    }

    // ------------------------------------------------------------------ statistics

    record Stats(long min, long median, long max) {
        static Stats of(long[] values) {
            long[] sorted = values.clone();
            Arrays.sort(sorted);
            return new Stats(sorted[0], sorted[sorted.length / 2], sorted[sorted.length - 1]);
        }

        Map<String, Object> json() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("minNs", min);
            m.put("medianNs", median);
            m.put("maxNs", max);
            return m;
        }
    }

    private static String ms(long ns) {
        return String.format(Locale.ROOT, "%.1f ms", ns / 1e6);
    }

    private static double round(double v) {
        return Math.round(v * 1000) / 1000.0;
    }

    // ------------------------------------------------------------------ 1. overhead

    static final Goal OVERHEAD_GOAL = Goal.atMost(1.05, "ratio <= 1.05");
    /** "Flat" made a number: no range size may cost more than twice a single page's conversion. */
    static final double FLAT = 2.0;
    static final Goal RATE_GOAL = Goal.atLeast(1_000_000, ">= 1,000,000 per second");
    static final Goal REVOCATION_GOAL = Goal.atMost(100_000, "p99 <= 100 us");
    static final Goal METADATA_GOAL = Goal.atMost(2.0, "<= 2 bits per page");
    static final Goal GUEST_GOAL = Goal.atLeast(0.95, "speed ratio >= 0.95");

    private List<Object> overhead() throws Exception {
        long size = quick ? 64 * MIB : GIB;
        int reps = quick ? 3 : 5;
        List<Object> rows = new ArrayList<>();
        say("1. Library vs kernel on the same work, %s, %d interleaved repetitions (ratio of medians, goal <= 1.05)",
                MemoryMapView.human(size), reps);
        if (kernelBench == null) {
            say("   skipped: %s", kernelBenchProblem);
            return rows;
        }
        // The kernel side has memfd and guest_memfd; the kernel's only where this host offers it.
        List<Backing> backings = new ArrayList<>(List.of(Backing.MEMFD));
        if (Backing.KERNEL.isAvailable()) {
            backings.add(Backing.KERNEL);
        } else {
            say("   kernel backing skipped: %s", Backing.KERNEL.unavailableReason().orElse(""));
        }
        for (Backing backing : backings) {
            for (String op : List.of("allocate", "punch", "populate", "touch")) {
                long[] lib = new long[reps];
                long[] kernel = new long[reps];
                for (int i = 0; i < reps; i++) {
                    lib[i] = libraryOp(backing, op, size);
                    kernel[i] = runKernelBench(backing == Backing.KERNEL ? "gmem" : "memfd", op, Long.toString(size)).get("ns");
                }
                Stats l = Stats.of(lib);
                Stats k = Stats.of(kernel);
                double ratio = (double) l.median() / k.median();
                Map<String, Object> row = new LinkedHashMap<>();
                row.put("backing", backing.name().toLowerCase(Locale.ROOT));
                row.put("operation", op);
                row.put("bytes", size);
                row.put("library", l.json());
                row.put("kernel", k.json());
                row.put("ratio", round(ratio));
                String mark = judge("overhead " + row.get("backing") + " " + op, OVERHEAD_GOAL, round(ratio), row);
                say("   %-7s %-9s library %9s  kernel %9s  ratio %.2f%s", backing.name().toLowerCase(Locale.ROOT), op,
                        ms(l.median()), ms(k.median()), ratio, mark);
                rows.add(row);
            }
        }
        return rows;
    }

    /** {@return the nanoseconds of one library operation on a new file} */
    private static long libraryOp(Backing backing, String op, long size) {
        try (GuestMemory memory = GuestMemory.create(size, FLAGS, backing)) {
            switch (op) {
                case "allocate" -> {
                    long t = System.nanoTime();
                    memory.allocate(0, size);
                    return System.nanoTime() - t;
                }
                case "punch" -> {
                    memory.allocate(0, size);
                    long t = System.nanoTime();
                    memory.punchHole(0, size);
                    return System.nanoTime() - t;
                }
                case "populate" -> {
                    try (HostMapping map = memory.map(0, size)) {
                        long t = System.nanoTime();
                        map.prefault(0, size);
                        return System.nanoTime() - t;
                    }
                }
                default -> {
                    try (HostMapping map = memory.map(0, size); Lease lease = map.lease(0, size)) {
                        MemorySegment s = lease.segment();
                        long t = System.nanoTime();
                        for (long o = 0; o < size; o += PAGE) {
                            s.set(JAVA_BYTE, o, (byte) 1);
                        }
                        return System.nanoTime() - t;
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ 2. conversions

    private List<Object> conversionCost() {
        int reps = quick ? 20 : 100;
        List<Object> rows = new ArrayList<>();
        say("2. Conversion cost against range size, 1 GiB file, nothing mapped (median of %d, goal: flat, at most %.0fx a page's)",
                reps, FLAT);
        try (GuestMemory memory = GuestMemory.create(GIB, FLAGS, Backing.MEMFD)) {
            for (int i = 0; i < 20_000; i++) {  // warm-up: measure compiled code, as JMH would
                memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                memory.convert(0, PAGE, Attribute.SHARED, Content.PRESERVE);
            }
            long pageMedian = 0;
            for (long size : new long[] {4096, 64 * 1024, 2 * MIB, 64 * MIB, GIB}) {
                long[] ns = new long[reps];
                for (int i = 0; i < reps; i++) {
                    long t = System.nanoTime();
                    memory.convert(0, size, Attribute.PRIVATE, Content.PRESERVE);
                    ns[i] = System.nanoTime() - t;
                    memory.convert(0, size, Attribute.SHARED, Content.PRESERVE);
                }
                Stats s = Stats.of(ns);
                if (size == PAGE) {
                    pageMedian = Math.max(1, s.median());
                }
                Map<String, Object> row = new LinkedHashMap<>();
                row.put("bytes", size);
                row.put("toPrivate", s.json());
                double times = round((double) s.median() / pageMedian);
                row.put("timesAPage", times);
                String mark = judge("conversion cost " + MemoryMapView.human(size),
                        Goal.atMost(FLAT, "at most " + (int) FLAT + "x a page's cost"), times, row);
                say("   %9s  %8.1f us%s", MemoryMapView.human(size), s.median() / 1e3, mark);
                rows.add(row);
            }
        }
        return rows;
    }

    private Map<String, Object> conversionRate() {
        int n = quick ? 200_000 : 1_000_000;
        Map<String, Object> out = new LinkedHashMap<>();
        try (GuestMemory memory = GuestMemory.create(GIB, FLAGS, Backing.MEMFD)) {
            SplittableRandom random = new SplittableRandom(42);
            long pages = GIB / PAGE;
            for (int i = 0; i < n / 4; i++) {  // warm-up
                memory.convert(random.nextLong(pages) * PAGE, PAGE, random.nextBoolean() ? Attribute.PRIVATE : Attribute.SHARED, Content.PRESERVE);
            }
            long t = System.nanoTime();
            for (int i = 0; i < n; i++) {
                memory.convert(random.nextLong(pages) * PAGE, PAGE, random.nextBoolean() ? Attribute.PRIVATE : Attribute.SHARED, Content.PRESERVE);
            }
            long ns = System.nanoTime() - t;
            double rate = n / (ns / 1e9);
            out.put("conversions", n);
            out.put("ns", ns);
            out.put("perSecond", Math.round(rate));
            String mark = judge("conversion rate", RATE_GOAL, rate, out);
            say("   random 4 KiB conversions on 1 GiB, one thread: %,.0f per second (goal >= 1,000,000)%s", rate, mark);
            out.put("metadataBytes", memory.metadataBytes());
        }
        return out;
    }

    // ------------------------------------------------------------------ 3. revocation

    private Map<String, Object> revocation() throws InterruptedException {
        int n = quick ? 300 : 3000;
        long window = MIB;
        say("3. Revocation latency: convert to private a page of a 1 MiB window that 2 host threads hold leases on and read"
                + " (%d conversions, goal p99 <= 100 us)", n);
        Map<String, Object> out = new LinkedHashMap<>();
        try (GuestMemory memory = GuestMemory.create(64 * MIB, FLAGS, Backing.MEMFD);
             HostMapping map = memory.map(0, 64 * MIB)) {
            map.prefault(0, window);
            AtomicBoolean stop = new AtomicBoolean();
            AtomicLong revoked = new AtomicLong();
            AtomicLong reads = new AtomicLong();
            AtomicLong holding = new AtomicLong();
            Runnable reader = () -> {
                SplittableRandom random = new SplittableRandom();
                while (!stop.get()) {
                    Lease lease;
                    try {
                        lease = map.lease(0, window);
                    } catch (dev.guestmemfd.HostAccessFault privateNow) {
                        Thread.onSpinWait();
                        continue;
                    }
                    holding.incrementAndGet();
                    try {
                        // Read until the lease is taken away: the conversion must stop this thread.
                        MemorySegment s = lease.segment();
                        while (!stop.get()) {
                            s.get(JAVA_LONG, random.nextLong(window / 8) * 8);
                            reads.incrementAndGet();
                        }
                    } catch (IllegalStateException taken) {
                        revoked.incrementAndGet();
                    } finally {
                        holding.decrementAndGet();
                        lease.close();
                    }
                }
            };
            List<Thread> readers = List.of(Thread.ofPlatform().start(reader), Thread.ofPlatform().start(reader));
            Histogram histogram = new Histogram(3_600_000_000_000L, 3);
            SplittableRandom random = new SplittableRandom(7);
            for (int i = 0; i < n; i++) {
                while (holding.get() < 2) {
                    Thread.onSpinWait();  // both readers are mid-read on the window
                }
                long page = random.nextLong(window / PAGE) * PAGE;
                long t = System.nanoTime();
                memory.convert(page, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                histogram.recordValue(System.nanoTime() - t);
                memory.convert(page, PAGE, Attribute.SHARED, Content.PRESERVE);
            }
            stop.set(true);
            for (Thread t : readers) {
                t.join();
            }
            long p50 = histogram.getValueAtPercentile(50);
            long p99 = histogram.getValueAtPercentile(99);
            long max = histogram.getMaxValue();
            String mark = judge("revocation p99", REVOCATION_GOAL, p99, out);
            say("   p50 %.1f us, p99 %.1f us, max %.1f us; %,d leases revoked mid-read, %,d host reads%s",
                    p50 / 1e3, p99 / 1e3, max / 1e3, revoked.get(), reads.get(), mark);
            out.put("conversions", n);
            out.put("p50Ns", p50);
            out.put("p99Ns", p99);
            out.put("maxNs", max);
            out.put("leasesRevokedMidRead", revoked.get());
            out.put("hostReads", reads.get());
        }
        return out;
    }

    // ------------------------------------------------------------------ 4. metadata

    private Map<String, Object> metadata() {
        Map<String, Object> out = new LinkedHashMap<>();
        long tib = 1L << 40;
        int n = quick ? 100_000 : 1_000_000;
        say("4. Metadata (goal: at most 2 bits per page in the worst case; struct page is 512 bits per 4 KiB page, the seed's 8 bytes per folio 64)");
        try (GuestMemory memory = GuestMemory.create(tib, FLAGS, Backing.MEMFD)) {
            SplittableRandom random = new SplittableRandom(1);
            long pages = tib / PAGE;
            for (int i = 0; i < n; i++) {
                memory.convert(random.nextLong(pages) * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
            }
            long bytes = memory.metadataBytes();
            Map<String, Object> row = new LinkedHashMap<>(Map.of("fileBytes", tib, "conversions", n, "metadataBytes", bytes,
                    "bitsPerPage", round(bytes * 8.0 / pages)));
            String mark = judge("metadata scattered", METADATA_GOAL, bytes * 8.0 / pages, row);
            say("   1 TiB file after %,d random 4 KiB conversions: %,d bytes (%.1f bytes per conversion, %.4f bits per page)%s",
                    n, bytes, (double) bytes / n, bytes * 8.0 / pages, mark);
            out.put("scattered", row);
        }
        try (GuestMemory memory = GuestMemory.create(GIB, FLAGS, Backing.MEMFD)) {
            long pages = GIB / PAGE;
            for (long p = 0; p < pages; p += 2) {
                memory.convert(p * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
            }
            long bytes = memory.metadataBytes();
            Map<String, Object> row = new LinkedHashMap<>(Map.of("fileBytes", GIB, "metadataBytes", bytes,
                    "bitsPerPage", round(bytes * 8.0 / pages)));
            String mark = judge("metadata worst case", METADATA_GOAL, bytes * 8.0 / pages, row);
            say("   worst case, every other page private over 1 GiB: %,d bytes, %.2f bits per page%s", bytes, bytes * 8.0 / pages, mark);
            out.put("worstCase", row);
        }
        return out;
    }

    // ------------------------------------------------------------------ 5. guest

    private Map<String, Object> guest() throws Exception {
        long size = quick ? 128 * MIB : GIB;
        int reps = quick ? 1 : 3;
        Map<String, Object> out = new LinkedHashMap<>();
        say("5. Guest side: the touch-all guest over %s, library-managed memory vs a guest_memfd memslot set up by C alone (goal >= 0.95)",
                MemoryMapView.human(size));
        String skipped = Backing.KERNEL.unavailableReason().map(r -> "the guest needs the kernel's guest_memfd: " + r)
                .orElse(kernelBench == null ? kernelBenchProblem : null);
        if (skipped != null) {
            say("   skipped: %s", skipped);
            out.put("skipped", skipped);
            return out;
        }
        Path guestBin = Files.createTempFile("touch_all", ".bin");
        Files.write(guestBin, GuestProgram.TOUCH_ALL.bytes());
        long[] lib = new long[reps];
        long[] kernel = new long[reps];
        for (int i = 0; i < reps; i++) {
            Machine.Config config = Machine.Config.of(GuestProgram.TOUCH_ALL, Backing.KERNEL, 1).withMemorySize(size);
            try (Kvm kvm = Kvm.open(); Machine machine = Machine.boot(kvm, config)) {
                long t = System.nanoTime();
                Machine.Outcome outcome = machine.run(Duration.ofMinutes(5));
                lib[i] = System.nanoTime() - t;
                if (!outcome.vcpus().getFirst().how().equals("result")) {
                    throw new IllegalStateException("touch-all guest stopped with " + outcome.vcpus().getFirst());
                }
            }
            kernel[i] = runKernelBench("gmem", "guest", Long.toString(size), guestBin.toString()).get("ns");
        }
        Files.delete(guestBin);
        Stats l = Stats.of(lib);
        Stats k = Stats.of(kernel);
        double ratio = (double) k.median() / l.median();
        out.put("bytes", size);
        out.put("library", l.json());
        out.put("kernel", k.json());
        out.put("ratio", round(ratio));
        String mark = judge("guest speed", GUEST_GOAL, round(ratio), out);
        say("   library %s, C %s: speed ratio %.2f (C time / library time)%s", ms(l.median()), ms(k.median()), ratio, mark);
        out.put("guestRegionStart", GuestLayout.region(0));
        return out;
    }
}
