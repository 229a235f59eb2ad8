package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.LazyRestore;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.LazyMachineLoad;
import dev.guestmemfd.kvm.Machine;
import dev.guestmemfd.kvm.Migration;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * {@code gmem migrate --demo --postcopy} where KVM is present: the counting guest runs, pauses
 * and runs on at a destination in this process (loopback TCP) at once, its pages following on
 * demand; then the same paused guest moves once more by stop-and-copy for the eager figure of
 * the same run. The check is the guest's own: the destination's first tick follows the
 * source's last one without a gap, and once every page is in, its memory equals the source's
 * page by page (but for the count page it kept writing).
 *
 * <p>One process is safe: the destination's vCPUs fault inside {@code KVM_RUN} (native code),
 * and no Java code reads its memory before its restore completed.
 */
final class GuestPostCopyDemo {
    private static final Duration TIMEOUT = Duration.ofSeconds(120);

    private final GuestOptions guest;
    private final long runMs;
    private final boolean json;

    GuestPostCopyDemo(GuestOptions guest, long runMs, boolean json) {
        this.guest = guest;
        this.runMs = runMs;
        this.json = json;
    }

    /** What the destination saw, its times by {@link System#nanoTime()}. */
    private record Landed(LazyMachineLoad load, long firstExitAt, long residentAt, long pausedAt, Machine.Outcome outcome) {
    }

    int run() throws Exception {
        Machine.Config config = guest.config(HostInfo.probe());
        Map<String, Object> out = new LinkedHashMap<>();
        boolean continued;
        long differing;
        try (Kvm kvm = Kvm.open(); Machine source = Machine.boot(kvm, config)) {
            guest.fill(source);
            long allocated = source.memory().pageCounts().allocated() * GuestMemory.PAGE_SIZE;
            Machine.Running running = source.start();
            Thread.sleep(runMs);
            Migration.Report report;
            Landed landed;
            try (ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
                server.setSoTimeout((int) TIMEOUT.toMillis());
                CompletableFuture<Landed> destination = new CompletableFuture<>();
                Thread.ofPlatform().daemon().name("postcopy-destination").start(() -> land(kvm, server, destination));
                try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort())) {
                    socket.setSoTimeout((int) TIMEOUT.toMillis());
                    socket.setTcpNoDelay(true);
                    report = Migration.send(running, socket, Migration.Options.defaults().withPostCopy(true));
                }
                landed = destination.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            }
            try (LazyMachineLoad load = landed.load()) {
                long eagerNs = eager(kvm, running);
                List<Long> before = MigrateCommand.ticks(report.source().serial());
                List<Long> after = MigrateCommand.ticks(landed.outcome().serial());
                long lastAtSource = before.isEmpty() ? 0 : before.getLast();
                continued = !after.isEmpty() && after.getFirst() == lastAtSource + 1 && GuestComparison.ticksFollow(after);
                differing = GuestComparison.differingPages(source, load.machine());
                LazyRestore.Stats stats = load.restore().stats();
                out.put("backing", GuestOptions.name(config.backing()));
                out.put("destinationBacking", GuestOptions.name(load.machine().config().backing()));
                out.put("path", "post-copy");
                out.put("mode", "postcopy");
                out.put("lazy", load.eagerReason().isEmpty());
                load.eagerReason().ifPresent(reason -> out.put("eagerReason", reason));
                out.put("firstAccessMs", (landed.firstExitAt() - landed.pausedAt()) / 1e6);
                out.put("residentMs", (landed.residentAt() - landed.pausedAt()) / 1e6);
                out.put("eagerMs", eagerNs / 1e6);
                out.put("faults", stats.faults() + stats.hostFetches());
                out.put("faultP50Us", stats.faultP50Us());
                out.put("faultP99Us", stats.faultP99Us());
                out.put("downtimeMs", report.pausedToRestoredNs() / 1e6);
                out.put("totalMs", report.totalNs() / 1e6);
                out.put("bytesSent", report.bytesSent());
                out.put("memoryBytes", report.memoryBytes());
                out.put("allocatedBytes", allocated);
                out.put("pagesFetched", stats.pagesFetched());
                out.put("lastTickAtSource", lastAtSource);
                out.put("firstTickAtDestination", after.isEmpty() ? 0 : after.getFirst());
                out.put("lastTickAtDestination", after.isEmpty() ? 0 : after.getLast());
                out.put("pagesDiffering", differing);
                out.put("guestContinued", continued && differing == 0);
            }
        }
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "post-copy of the counting guest (%s, %s on %s): it ran on at the destination"
                            + " %.2f ms after the pause (first exit), every page in after %.1f ms; stop-and-copy of the"
                            + " same guest took %.1f ms;%n", MemoryMapView.human((Long) out.get("memoryBytes")), out.get("backing"),
                    out.get("destinationBacking"), out.get("firstAccessMs"), out.get("residentMs"), out.get("eagerMs"));
            System.out.printf(Locale.ROOT, "source printed ticks up to %d, the destination %d..%d; %d pages fetched on demand"
                            + " (p99 %.0f µs); pages differing from the source: %d.%n", out.get("lastTickAtSource"),
                    out.get("firstTickAtDestination"), out.get("lastTickAtDestination"), (Long) out.get("faults"),
                    out.get("faultP99Us"), differing);
        }
        return (boolean) out.get("guestContinued") ? 0 : 1;
    }

    /** The destination: resumes at once, times the guest's first exit and full residency, runs it a while, pauses it. */
    private void land(Kvm kvm, ServerSocket server, CompletableFuture<Landed> landed) {
        LazyMachineLoad load = null;
        try (Socket socket = server.accept()) {
            socket.setSoTimeout((int) TIMEOUT.toMillis());
            socket.setTcpNoDelay(true);
            load = Migration.receivePostCopy(kvm, socket, Backing.MEMFD);
            long firstExit = load.running().awaitFirstExit(TIMEOUT);
            if (firstExit < 0 || !load.restore().awaitResident(TIMEOUT)) {
                throw new Failure(Errno.ETIMEDOUT, "the destination's guest did not run, or its pages did not come, in " + TIMEOUT);
            }
            long resident = System.nanoTime();
            load.restore().await(TIMEOUT);  // the source's release: only then is the socket done with
            Thread.sleep(runMs);
            Machine.Outcome outcome = load.pause();
            landed.complete(new Landed(load, firstExit, resident, load.sourcePausedAtNanos().orElse(0), outcome));
        } catch (IOException | RuntimeException | InterruptedException e) {
            if (load != null) {
                load.close();
            }
            landed.completeExceptionally(e);
        }
    }

    /**
     * {@return the stop-and-copy of the same paused guest: from its pause to the destination
     * ready, every page sent first} {@code paused} was paused by the post-copy and stays so.
     */
    private static long eager(Kvm kvm, Machine.Running paused) throws Exception {
        try (ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            server.setSoTimeout((int) TIMEOUT.toMillis());
            CompletableFuture<Void> destination = new CompletableFuture<>();
            Thread.ofPlatform().daemon().name("stop-and-copy-destination").start(() -> {
                try (Socket socket = server.accept()) {
                    socket.setSoTimeout((int) TIMEOUT.toMillis());
                    Migration.receive(kvm, socket).close();
                    destination.complete(null);
                } catch (IOException | RuntimeException e) {
                    destination.completeExceptionally(e);
                }
            });
            Migration.Report report;
            try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort())) {
                socket.setSoTimeout((int) TIMEOUT.toMillis());
                report = Migration.send(paused, socket, Migration.Options.defaults().withPreCopy(false));
            }
            destination.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            return report.pausedToRestoredNs();
        }
    }
}
