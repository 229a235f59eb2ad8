package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.LazyRestore;
import dev.guestmemfd.PageRun;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.migration.CarriedState;
import dev.guestmemfd.migration.FileDescription;
import dev.guestmemfd.migration.GuestActivity;
import dev.guestmemfd.migration.MemoryMigration;
import dev.guestmemfd.migration.PageWorkload;
import dev.guestmemfd.migration.PostCopy;
import dev.guestmemfd.migration.X25519Agreement;
import dev.guestmemfd.models.ArchitectureModel;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/**
 * {@code gmem migrate --demo --postcopy} (memory-only): a file owned by an architecture model
 * moves by post-copy to a destination in this process over loopback, where a workload's first
 * access is timed from the source's pause; then the same file, still paused, moves once more
 * by stop-and-copy (every page sent while paused) for the eager figure of the same run.
 *
 * <p>One process is safe here: no Java code at the destination touches a page before the
 * library brought it in (host reads go through the library; the owner's check runs once the
 * restore is complete), so no thread the JVM waits for at a safepoint can block in a fault.
 */
final class PostCopyDemo {
    private static final Duration TIMEOUT = Duration.ofSeconds(120);

    private final GuestOptions guest;
    private final MemoryMigrateDemo.OwnerModel owner;
    private final long writeRate;
    private final long runMs;
    private final boolean json;

    PostCopyDemo(GuestOptions guest, MemoryMigrateDemo.OwnerModel owner, long writeRate, long runMs, boolean json) {
        this.guest = guest;
        this.owner = owner;
        this.writeRate = writeRate;
        this.runMs = runMs;
        this.json = json;
    }

    /** What the destination saw. */
    private record Landed(long firstAccessNs, long residentNs, LazyRestore.Stats stats, List<String> problems,
                          boolean lazy) {
    }

    int run() throws Exception {
        long size = guest.memory;
        Backing backing = guest.backing == null ? Backing.MEMFD : guest.backing;
        if (backing == Backing.KERNEL) {
            throw Failure.usage("--backing kernel: a memory-only migration has no VM to own a guest_memfd; use memfd or secret");
        }
        GuestOptions.requireAvailable(backing);
        long flags = Flag.MMAP.bit() | Flag.INIT_SHARED.bit() | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
        ArchitectureModel model = owner.make();
        Map<String, Object> out = new LinkedHashMap<>();
        boolean passed;
        try (ExecutorService threads = Executors.newCachedThreadPool();
             GuestMemory memory = GuestMemory.create(size, flags, backing)) {
            Binding binding = memory.bind(model, 0, size);
            try (PageWorkload workload = PageWorkload.start(binding, guest.allocatedPercent / 100.0, size, writeRate)) {
                long allocated = memory.pageCounts().allocated() * GuestMemory.PAGE_SIZE;
                Thread.sleep(runMs);
                // post-copy: the workload pauses at the source and its first access at the destination is timed
                PostCopy.Report report;
                Landed landed;
                try (ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
                    server.setSoTimeout((int) TIMEOUT.toMillis());
                    CompletableFuture<Landed> destination = CompletableFuture.supplyAsync(() -> land(server), threads);
                    try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort())) {
                        socket.setSoTimeout((int) TIMEOUT.toMillis());
                        socket.setTcpNoDelay(true);
                        var key = X25519Agreement.agree(socket.getInputStream(), socket.getOutputStream());
                        report = PostCopy.send(binding, workload, List.of(model, workload), socket.getInputStream(),
                                socket.getOutputStream(), key, TIMEOUT);
                    }
                    landed = destination.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
                }
                // stop-and-copy of the same file, still paused: every page travels before the destination holds it
                long eagerNs = eager(binding, List.of(model, workload), threads);
                passed = landed.problems.isEmpty();
                out.put("backing", GuestOptions.name(backing));
                out.put("path", "memory-only");
                out.put("mode", "postcopy");
                out.put("owner", model.architecture());
                out.put("lazy", landed.lazy);
                out.put("firstAccessMs", landed.firstAccessNs / 1e6);
                out.put("residentMs", landed.residentNs / 1e6);
                out.put("eagerMs", eagerNs / 1e6);
                out.put("faults", landed.stats.faults() + landed.stats.hostFetches());
                out.put("faultP50Us", landed.stats.faultP50Us());
                out.put("faultP99Us", landed.stats.faultP99Us());
                out.put("downtimeMs", report.pausedToResumedNs() / 1e6);
                out.put("totalMs", report.totalNs() / 1e6);
                out.put("bytesSent", report.bytesSent());
                out.put("memoryBytes", report.memoryBytes());
                out.put("allocatedBytes", allocated);
                out.put("pagesServed", report.pagesServed());
                out.put("urgentExtents", report.urgentServed());
                out.put("extentsResent", report.extentsResent());
                out.put("guestContinued", passed);
                if (!passed) {
                    out.put("problems", landed.problems);
                }
            }
        }
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "post-copy of a %s file owned by a %s model: first access %.2f ms after the pause,"
                    + " every page in after %.1f ms; stop-and-copy of the same file took %.1f ms;%n",
                    MemoryMapView.human(size), model.architecture(), out.get("firstAccessMs"), out.get("residentMs"),
                    out.get("eagerMs"));
            System.out.printf(Locale.ROOT, "%d pages fetched on demand (p99 %.0f µs); the workload's check %s.%n",
                    (Long) out.get("faults"), out.get("faultP99Us"), passed ? "passed" : "FAILED: " + out.get("problems"));
        }
        return passed ? 0 : 1;
    }

    /** The post-copy destination: resumes, makes the first access, waits for every page, checks them. */
    private static Landed land(ServerSocket server) {
        try (Socket socket = server.accept()) {
            socket.setSoTimeout((int) TIMEOUT.toMillis());
            socket.setTcpNoDelay(true);
            var key = X25519Agreement.agree(socket.getInputStream(), socket.getOutputStream());
            PostCopy.Arrival arrival = PostCopy.receive(socket.getInputStream(), socket.getOutputStream(), key,
                    build(), TIMEOUT);
            try (GuestMemory _ = arrival.memory(); LazyRestore restore = arrival.restore()) {
                // the workload's first access: the last page with bytes, which the ordered pull reaches last
                long last = arrival.layout().reversed().stream().filter(PageRun::allocated)
                        .mapToLong(r -> r.offset() + r.length() - GuestMemory.PAGE_SIZE).findFirst().orElse(0);
                restore.fetch(last, GuestMemory.PAGE_SIZE);
                long firstAccess = System.nanoTime() - arrival.pausedAtNanos();
                if (!restore.await(TIMEOUT)) {
                    throw new IOException("post-copy did not complete in " + TIMEOUT);
                }
                long resident = System.nanoTime() - arrival.pausedAtNanos();
                List<String> problems = new ArrayList<>();
                for (CarriedState state : arrival.carried()) {
                    if (state instanceof PageWorkload.Check check) {
                        problems.addAll(check.verify(arrival.binding()));
                    }
                }
                return new Landed(firstAccess, resident, restore.stats(), problems, restore.eagerReason().isEmpty());
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /** The destination's file, owner (the model named by the carried states) and the workload's check. */
    private static Function<FileDescription, MemoryMigration.Destination> build() {
        return d -> {
            List<CarriedState> carried = new ArrayList<>();
            ArchitectureModel owner = null;
            for (String kind : d.carried()) {
                if (kind.equals(PageWorkload.KIND)) {
                    carried.add(PageWorkload.check());
                } else {
                    owner = MemoryMigrateDemo.OwnerModel.forKind(kind);
                    carried.add(owner);
                }
            }
            if (owner == null) {
                throw new IllegalArgumentException("the source carries no owner");
            }
            return new MemoryMigration.Destination(d.create(), owner, carried);
        };
    }

    /** {@return the stop-and-copy time of the paused file: start of sending to the destination holding every page} */
    private static long eager(Binding binding, List<CarriedState> carried, ExecutorService threads) throws Exception {
        GuestActivity paused = new GuestActivity() {
            @Override
            public void pause() {
                // paused already, by the post-copy
            }

            @Override
            public void resume() {
                // stays paused: the post-copy moved it
            }

            @Override
            public BitSet written() {
                return new BitSet();
            }
        };
        try (ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            server.setSoTimeout((int) TIMEOUT.toMillis());
            CompletableFuture<Void> destination = CompletableFuture.runAsync(() -> {
                try (Socket socket = server.accept()) {
                    socket.setSoTimeout((int) TIMEOUT.toMillis());
                    MemoryMigration.Arrival arrival = MemoryMigration.receive(socket, new Snapshot.ReplayGuard(), build());
                    arrival.memory().close();
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, threads);
            MemoryMigration.Report report;
            try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort())) {
                socket.setSoTimeout((int) TIMEOUT.toMillis());
                report = MemoryMigration.send(binding, paused, carried, socket,
                        new MemoryMigration.Options(1, Long.MAX_VALUE, (round, bytes) -> { }));
            }
            destination.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            return report.totalNs();
        }
    }
}
