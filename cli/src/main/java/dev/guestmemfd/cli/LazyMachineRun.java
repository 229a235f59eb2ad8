package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.LazyRestore;
import dev.guestmemfd.PageSource;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.LazyMachineLoad;
import dev.guestmemfd.kvm.Machine;
import dev.guestmemfd.kvm.Migration;
import java.io.BufferedInputStream;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import javax.crypto.SecretKey;

/**
 * {@code gmem restore --lazy} of a saved guest where KVM is present: the machine loaded
 * eagerly (timed, not run but for its first tick), then lazily, running at once on memory
 * still arriving; the same fields as the memory-only run, and the guest's own check: the
 * counting guest's first tick on lazy memory is the eager one's (its count came through), its
 * ticks follow one another, and once every page is in its memory equals the eager load's,
 * page by page (but for the count pages both guests wrote).
 */
final class LazyMachineRun {
    private LazyMachineRun() {
    }

    static int run(Path file, SecretKey key, Machine.Config saved, Backing backing, long runMs, boolean json) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Kvm kvm = Kvm.open()) {
            long eagerStart = System.nanoTime();
            Machine eager;
            try (InputStream in = new BufferedInputStream(Files.newInputStream(file), 1 << 16)) {
                eager = Migration.load(kvm, key, in, new Snapshot.ReplayGuard(), backing);
            } catch (GuestMemoryException e) {
                throw new Failure(e.errno(), "snapshot file " + file + ": " + e.getMessage());
            }
            long eagerNanos = System.nanoTime() - eagerStart;
            try (eager) {
                long eagerFirstTick = firstTick(eager);
                long start = System.nanoTime();
                LazyMachineLoad lazy;
                long indexed;
                try {
                    PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard());
                    indexed = System.nanoTime() - start;
                    lazy = Migration.load(kvm, source, backing);
                } catch (GuestMemoryException e) {
                    throw new Failure(e.errno(), "snapshot file " + file + ": " + e.getMessage());
                }
                long started = System.nanoTime() - start;
                try (lazy) {
                    long firstExit = lazy.running().awaitFirstExit(Duration.ofMinutes(1));
                    if (firstExit < 0) {
                        throw new Failure(Errno.ETIMEDOUT, "the lazily loaded guest made no exit in a minute");
                    }
                    LazyRestore restore = lazy.restore();
                    if (!restore.awaitResident(Duration.ofMinutes(10))) {
                        throw new Failure(Errno.ETIMEDOUT, "lazy restore of " + file + " did not bring every page in 10 minutes");
                    }
                    long resident = System.nanoTime() - start;
                    try {
                        restore.await(Duration.ofMinutes(10));
                    } catch (GuestMemoryException e) {
                        // The failure listener stopped the guest already; say why, as for the eager path.
                        throw new Failure(e.errno(), "lazy restore of " + file + " failed, the guest was stopped: " + e.getMessage());
                    }
                    long complete = System.nanoTime() - start;
                    Thread.sleep(runMs);
                    Machine.Outcome outcome = lazy.pause();
                    List<Long> ticks = MigrateCommand.ticks(outcome.serial());
                    boolean continued = !ticks.isEmpty() && ticks.getFirst() == eagerFirstTick && GuestComparison.ticksFollow(ticks);
                    long differing = GuestComparison.differingPages(eager, lazy.machine());
                    LazyRestore.Stats stats = restore.stats();
                    out.put("file", file.toString());
                    out.put("guest", true);
                    out.put("savedBacking", GuestOptions.name(saved.backing()));
                    out.put("backing", GuestOptions.name(lazy.machine().config().backing()));
                    out.put("memoryBytes", saved.memorySize());
                    out.put("allocatedBytes", stats.pagesFetched() * GuestMemory.PAGE_SIZE);
                    out.put("lazy", lazy.eagerReason().isEmpty());
                    lazy.eagerReason().ifPresent(reason -> out.put("eagerReason", reason));
                    out.put("indexMs", indexed / 1e6);
                    out.put("readyMs", started / 1e6);
                    out.put("firstAccessMs", (firstExit - start) / 1e6);
                    out.put("residentMs", resident / 1e6);
                    out.put("completeMs", complete / 1e6);
                    out.put("eagerMs", eagerNanos / 1e6);
                    out.put("firstAccessOfEager", eagerNanos == 0 ? 0 : (double) (firstExit - start) / eagerNanos);
                    out.put("faults", stats.faults() + stats.hostFetches());
                    out.put("faultP50Us", stats.faultP50Us());
                    out.put("faultP99Us", stats.faultP99Us());
                    out.put("pulled", stats.pulled());
                    out.put("firstTick", ticks.isEmpty() ? 0 : ticks.getFirst());
                    out.put("lastTick", ticks.isEmpty() ? 0 : ticks.getLast());
                    out.put("eagerFirstTick", eagerFirstTick);
                    out.put("guestContinued", continued);
                    out.put("pagesDiffering", differing);
                }
            }
        }
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "%s: a %s guest, %,d bytes of memory, %,d with data, restored on %s%n", file,
                    out.get("savedBacking"), out.get("memoryBytes"), out.get("allocatedBytes"), out.get("backing"));
            System.out.printf(Locale.ROOT, "eager load %.1f ms; lazy: the guest's first exit after %.2f ms (%.2f %% of eager),"
                            + " all resident after %.1f ms, checked after %.1f ms%n", out.get("eagerMs"), out.get("firstAccessMs"),
                    100 * (double) out.get("firstAccessOfEager"), out.get("residentMs"), out.get("completeMs"));
            System.out.printf(Locale.ROOT, "%d pages fetched on demand: p50 %.0f us, p99 %.0f us%n", out.get("faults"),
                    out.get("faultP50Us"), out.get("faultP99Us"));
            System.out.printf(Locale.ROOT, "the guest counted on from tick %d to %d (%s); pages differing from the eager load: %d%n",
                    out.get("firstTick"), out.get("lastTick"), (boolean) out.get("guestContinued") ? "its count came through"
                            : "NOT the eager load's count", out.get("pagesDiffering"));
            if (out.containsKey("eagerReason")) {
                System.out.println("restored eagerly: " + out.get("eagerReason"));
            }
        }
        return (boolean) out.get("guestContinued") && (long) out.get("pagesDiffering") == 0 ? 0 : 1;
    }

    /** {@return the first tick the eagerly loaded guest prints: its saved count plus one} */
    private static long firstTick(Machine eager) throws InterruptedException {
        Machine.Running running = eager.start();
        List<Long> ticks = List.of();
        long deadline = System.nanoTime() + Duration.ofMinutes(1).toNanos();
        while (ticks.isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(1);
            ticks = MigrateCommand.ticks(eager.serial());
        }
        running.pause();
        if (ticks.isEmpty()) {
            throw new Failure(Errno.ETIMEDOUT, "the eagerly loaded guest printed no tick in a minute");
        }
        return ticks.getFirst();
    }
}
