package dev.guestmemfd.benchmarks;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.Owner;
import dev.guestmemfd.Snapshot;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.util.concurrent.TimeUnit;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
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
 * Snapshot streams in a warm JVM: writing 64 MiB of allocated pages (to a sink) and restoring
 * them (from memory into a fresh file), all shared (plain) or all private (AES-GCM sealed).
 * Bytes per second = 64 MiB / the time per operation. Run with
 * {@code benchmarks/run-jmh SnapshotBenchmark}.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
public class SnapshotBenchmark {
    static final long SIZE = 64L << 20;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();

    @Param({"SHARED", "PRIVATE"})
    Attribute pages;

    private SecretKey key;
    private GuestMemory source;
    private Binding owner;
    private byte[] stream;
    private GuestMemory target;
    private Binding targetOwner;

    @Setup(Level.Trial)
    public void create() throws Exception {
        KeyGenerator g = KeyGenerator.getInstance("AES");
        g.init(256);
        key = g.generateKey();
        source = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
        owner = source.bind(new Owner() { }, 0, SIZE);
        owner.pages().fill((byte) 0x3c);
        source.convert(0, SIZE, pages, Content.PRESERVE);
        ByteArrayOutputStream out = new ByteArrayOutputStream((int) SIZE + (1 << 20));
        Snapshot.write(owner, key, out);
        stream = out.toByteArray();
    }

    @Setup(Level.Invocation)
    public void freshTarget() {
        target = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
        targetOwner = target.bind(new Owner() { }, 0, SIZE);
    }

    @TearDown(Level.Invocation)
    public void closeTarget() {
        target.close();
    }

    @TearDown(Level.Trial)
    public void close() {
        source.close();
    }

    @Benchmark
    public long write() throws IOException {
        return Snapshot.write(owner, key, OutputStream.nullOutputStream());
    }

    @Benchmark
    public long restore() throws IOException {
        Snapshot.restore(targetOwner, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard());
        return target.pageCounts().allocated();
    }
}
