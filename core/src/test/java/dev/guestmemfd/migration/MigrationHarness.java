package dev.guestmemfd.migration;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.Owner;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.testing.TestKeys;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import java.util.function.Supplier;
import javax.crypto.SecretKey;

/**
 * Two ends of a memory-only migration in one JVM, over loopback sockets, with a relay between
 * them that can cut the stream or alter one byte of it, as an attacker in the path would.
 */
final class MigrationHarness {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final int TIMEOUT_MS = 60_000;

    private MigrationHarness() {
    }

    static SecretKey key() {
        return TestKeys.aes256();
    }

    /** {@return flags for a mappable file, shared at first, on {@code backing}} */
    static long flags(Backing backing) {
        return Flag.MMAP.bit() | Flag.INIT_SHARED.bit() | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
    }

    /** A source: a file, its owner's binding and a workload writing it. */
    record Source(GuestMemory memory, Binding binding, PageWorkload workload) implements AutoCloseable {
        static Source of(Backing backing, long size, Owner owner, double share, long writesPerSecond) {
            GuestMemory memory = GuestMemory.create(size, flags(backing), backing);
            try {
                Binding binding = memory.bind(owner, 0, size);
                return new Source(memory, binding, PageWorkload.start(binding, share, 42, writesPerSecond));
            } catch (RuntimeException e) {
                memory.close();
                throw e;
            }
        }

        /** {@return what differs between the source file and what its workload wrote} (paused meanwhile) */
        List<String> selfCheck() {
            workload.pause();
            try {
                PageWorkload.Check check = PageWorkload.check();
                check.importState(workload.exportState());
                return check.verify(binding);
            } finally {
                workload.resume();
            }
        }

        @Override
        public void close() {
            workload.close();
            memory.close();
        }
    }

    /** What happened at each end. */
    record Outcome(MemoryMigration.Report report, Throwable sendFailure, MemoryMigration.Arrival arrival,
                   Throwable receiveFailure, MemoryMigration.Destination built) {
    }

    /** How the relay treats the bytes from the source: passes them, cuts them at a byte, or flips one. */
    record Tamper(long cutAt, long flipAt) {
        static final Tamper NONE = new Tamper(-1, -1);

        static Tamper cut(long at) {
            return new Tamper(at, -1);
        }

        static Tamper flip(long at) {
            return new Tamper(-1, at);
        }
    }

    /** Migrates {@code source} through a relay, the receiver building with {@code build} and {@code carried}. */
    static Outcome migrate(Source source, List<? extends CarriedState> sent, SecretKey sendKey, SecretKey receiveKey,
                           Tamper tamper, Supplier<Owner> owner, Supplier<List<CarriedState>> carried,
                           MemoryMigration.Options options) throws Exception {
        AtomicReference<MemoryMigration.Destination> built = new AtomicReference<>();
        Function<FileDescription, MemoryMigration.Destination> build = d -> {
            MemoryMigration.Destination a = new MemoryMigration.Destination(d.create(), owner.get(), carried.get());
            built.set(a);
            return a;
        };
        InetAddress loopback = InetAddress.getLoopbackAddress();
        // Threads of its own: the common pool has one worker on a two-core machine.
        try (ExecutorService threads = Executors.newCachedThreadPool();
             ServerSocket destination = new ServerSocket(0, 1, loopback);
             ServerSocket relay = new ServerSocket(0, 1, loopback)) {
            destination.setSoTimeout(TIMEOUT_MS);
            relay.setSoTimeout(TIMEOUT_MS);
            CompletableFuture<MemoryMigration.Arrival> receiver = CompletableFuture.supplyAsync(() -> {
                try (Socket s = destination.accept()) {
                    s.setSoTimeout(TIMEOUT_MS);
                    return MemoryMigration.receive(s.getInputStream(), s.getOutputStream(), receiveKey,
                            new Snapshot.ReplayGuard(), build);
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, threads);
            CompletableFuture<Void> relaying = CompletableFuture.runAsync(() -> LoopbackRelay.relayOne(relay, destination,
                    TIMEOUT_MS, threads, (in, out) -> copy(in, out, tamper), (in, out) -> copy(in, out, Tamper.NONE)), threads);
            MemoryMigration.Report report = null;
            Throwable sendFailure = null;
            try (Socket s = new Socket(loopback, relay.getLocalPort())) {
                s.setSoTimeout(TIMEOUT_MS);
                report = MemoryMigration.send(source.binding(), source.workload(), sent, s.getInputStream(),
                        s.getOutputStream(), sendKey, options);
            } catch (IOException | RuntimeException e) {
                sendFailure = e;
            }
            MemoryMigration.Arrival arrival = null;
            Throwable receiveFailure = null;
            try {
                arrival = receiver.get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            } catch (ExecutionException e) {
                receiveFailure = e.getCause() instanceof java.io.UncheckedIOException u ? u.getCause() : e.getCause();
            }
            relaying.get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            return new Outcome(report, sendFailure, arrival, receiveFailure, built.get());
        }
    }

    /** Copies the source's bytes, cut or with a byte flipped as {@code tamper} says. */
    private static void copy(InputStream in, OutputStream out, Tamper tamper) throws IOException {
        byte[] buffer = new byte[1 << 16];
        long position = 0;
        int n;
        while ((n = in.read(buffer)) > 0) {
            if (tamper.cutAt() >= 0 && position + n > tamper.cutAt()) {
                out.write(buffer, 0, (int) (tamper.cutAt() - position));
                out.flush();
                break;
            }
            if (tamper.flipAt() >= position && tamper.flipAt() < position + n) {
                buffer[(int) (tamper.flipAt() - position)] ^= 0x01;
            }
            out.write(buffer, 0, n);
            position += n;
        }
    }
}
