package dev.guestmemfd.benchmarks;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Lease;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Host access to shared pages: a scoped 4 KiB read ({@link HostMapping#compute}) against the
 * same read through a plain segment (a lease's), and 64 KiB host copies, which take no
 * file-wide lock: run {@code copy64k} with {@code -t 1} and {@code -t 2} to compare one and
 * two threads on disjoint ranges. Run with {@code benchmarks/run-jmh HostAccessBenchmark}.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
public class HostAccessBenchmark {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long FILE = 64L << 20;
    static final long WINDOW = 1L << 20;

    /** One file and mapping shared by every benchmark thread. */
    @State(Scope.Benchmark)
    public static class File {
        GuestMemory memory;
        HostMapping mapping;
        Lease lease;
        final AtomicInteger threads = new AtomicInteger();

        @Setup(Level.Trial)
        public void create() {
            memory = GuestMemory.create(FILE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
            mapping = memory.map(0, FILE);
            mapping.prefault(0, FILE);
            lease = mapping.lease(0, WINDOW);
        }

        @TearDown(Level.Trial)
        public void close() {
            lease.close();
            mapping.close();
            memory.close();
        }
    }

    /** Each thread's own range and buffer. */
    @State(Scope.Thread)
    public static class Cursor {
        long page;
        long from;
        long at;
        Arena arena;
        MemorySegment buffer;

        @Setup(Level.Trial)
        public void create(File file) {
            from = file.threads.getAndIncrement() * (FILE / 4);
            arena = Arena.ofConfined();
            buffer = arena.allocate(64 * 1024, 4096);
        }

        @TearDown(Level.Trial)
        public void close() {
            arena.close();
        }

        long nextPage() {
            page = (page + PAGE) % WINDOW;
            return page;
        }
    }

    static long sum(MemorySegment page) {
        long s = 0;
        for (long at = 0; at < page.byteSize(); at += 8) {
            s += page.get(JAVA_LONG, at);
        }
        return s;
    }

    @Benchmark
    public long scopedRead4k(File file, Cursor cursor) {
        return file.mapping.compute(cursor.nextPage(), PAGE, HostAccessBenchmark::sum);
    }

    @Benchmark
    public long plainRead4k(File file, Cursor cursor) {
        return sum(file.lease.segment().asSlice(cursor.nextPage(), PAGE));
    }

    @Benchmark
    public void copy64k(File file, Cursor cursor) {
        file.mapping.read(cursor.from + cursor.at, cursor.buffer);
        cursor.at = (cursor.at + cursor.buffer.byteSize()) % (FILE / 4);
    }
}
