package dev.guestmemfd.benchmarks;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Conversions with nothing mapped: the library's bookkeeping alone (PRESERVE, so no punch).
 * Run with {@code benchmarks/run-jmh}.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
public class ConversionBenchmark {
    static final long PAGE = GuestMemory.PAGE_SIZE;

    /** Bytes converted per call, on a 1 GiB file. */
    @Param({"4096", "2097152", "1073741824"})
    long rangeBytes;

    private GuestMemory memory;
    private final SplittableRandom random = new SplittableRandom(42);
    private long slots;

    @Setup(Level.Trial)
    public void create() {
        memory = GuestMemory.create(1L << 30, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
        slots = (1L << 30) / rangeBytes;
    }

    @TearDown(Level.Trial)
    public void close() {
        memory.close();
    }

    /** A range at a random aligned offset made private, then shared again: two conversions. */
    @Benchmark
    public void convertAndBack() {
        long offset = random.nextLong(slots) * rangeBytes;
        memory.convert(offset, rangeBytes, Attribute.PRIVATE, Content.PRESERVE);
        memory.convert(offset, rangeBytes, Attribute.SHARED, Content.PRESERVE);
    }

    /** A random 4 KiB page to a random state: the scattered pattern of a running guest. */
    @Benchmark
    public void randomPage() {
        memory.convert(random.nextLong((1L << 30) / PAGE) * PAGE, PAGE,
                random.nextBoolean() ? Attribute.PRIVATE : Attribute.SHARED, Content.PRESERVE);
    }
}
