package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.PageSource;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.kvm.Kvm;
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
import java.util.Optional;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "restore", mixinStandardHelpOptions = true, description = {
    "Load a guest saved by `gmem snapshot` and run it on: the file is checked as it is read (a",
    "cut, altered or wrong-key file is refused, EBADMSG, and nothing runs).",
    "With --lazy: restore lazily and time it next to the eager restore of the same file: first",
    "access, full residency, on-demand fetches. Where KVM is present the saved guest runs at once",
    "on memory still arriving (and is checked against the eager load); without KVM, or for a",
    "file of memory alone, only the memory is restored. --backing hugetlb_2m restores into huge",
    "pages, fetched a whole huge page at a time. With --lazy and FILE `-`: restore lazily from",
    "standard input (a pipe), as it arrives; --key is then needed."})
final class RestoreCommand implements Callable<Integer> {
    @Parameters(index = "0", defaultValue = "guest.gsnap", description = "The snapshot file, or `-` for standard input with"
            + " --lazy (default: ${DEFAULT-VALUE}).")
    Path file;

    @Option(names = "--key", description = "The key file (default: FILE.key).")
    Path key;

    @Option(names = "--run-ms", defaultValue = "800", description = "How long the restored guest runs, in ms (default: ${DEFAULT-VALUE}).")
    long runMs;

    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Option(names = "--lazy", description = "Restore the memory lazily through userfaultfd and report firstAccessMs, "
            + "residentMs, eagerMs, faults and faultP99Us.")
    boolean lazy;

    @Option(names = "--touch", defaultValue = "1000", description = "With --lazy: pages a workload reads at random "
            + "while the background pull runs (default: ${DEFAULT-VALUE}).")
    int touch;

    @Option(names = "--backing", description = "With --lazy: the backing of the restored memory (of the saved guest's,"
            + " for a guest), ${COMPLETION-CANDIDATES} (default: memfd; memfd and hugetlb are served lazily, the others"
            + " restore eagerly and say why).")
    Backing backing;

    @Override
    public Integer call() throws Exception {
        // The arguments and files first, then the host: a wrong path is told as such on any host.
        if (runMs < 0) {
            throw Failure.usage("--run-ms " + runMs + ": a duration is 0 or more");
        }
        if (backing != null && !lazy) {
            throw Failure.usage("--backing goes with --lazy (a guest restores on the backing it was saved on)");
        }
        if (lazy && file.toString().equals("-")) {
            if (key == null) {
                throw Failure.usage("restore --lazy -: a snapshot on standard input needs --key KEYFILE");
            }
            return LazyRestoreRun.runFromStream(System.in, SnapshotKey.read(key), touch, json);
        }
        UserFiles.requireReadable("snapshot file", file);
        Path keyFile = key != null ? key : SnapshotKey.besides(file);
        var secret = SnapshotKey.read(keyFile);
        if (lazy) {
            Optional<Machine.Config> saved;
            try (PageSource probe = PageSource.open(file, secret, new Snapshot.ReplayGuard())) {
                saved = Migration.describedMachine(probe);
            } catch (GuestMemoryException e) {
                throw new Failure(e.errno(), "snapshot file " + file + ": " + e.getMessage());
            }
            Optional<String> noKvm = Kvm.unavailableReason();
            Backing into = backing != null ? backing : Backing.MEMFD;
            GuestOptions.requireAvailable(into);
            if (saved.isPresent() && noKvm.isEmpty()) {
                return LazyMachineRun.run(file, secret, saved.get(), into, runMs, json);
            }
            return LazyRestoreRun.run(file, secret, touch, json, into, saved.isEmpty() ? "the file holds memory alone"
                    : "a saved guest, but no KVM here: " + noKvm.get());
        }
        GuestOptions.requireKvm("restore (it runs the guest; `gmem snapshot verify " + file + "` checks the file without KVM)");
        Map<String, Object> out = new LinkedHashMap<>();
        try (Kvm kvm = Kvm.open()) {
            long start = System.nanoTime();
            Machine machine;
            try (ProgressBar bar = ProgressBar.onTerminal("restoring", Files.size(file));
                 InputStream in = new BufferedInputStream(bar.track(Files.newInputStream(file)), 1 << 16)) {
                // A new guard: a snapshot file may be restored again, as a VM image is booted again.
                machine = Migration.load(kvm, secret, in, new Snapshot.ReplayGuard());
            } catch (GuestMemoryException e) {
                throw new Failure(e.errno(), "snapshot file " + file + ": " + e.getMessage());
            }
            long loaded = System.nanoTime() - start;
            try (machine) {
                List<Long> ticks = MigrateCommand.ticks(machine.run(Duration.ofMillis(runMs)).serial());
                out.put("file", file.toString());
                out.put("backing", GuestOptions.name(machine.config().backing()));
                out.put("memoryBytes", machine.config().memorySize());
                out.put("allocatedBytes", machine.memory().pageCounts().allocated() * GuestMemory.PAGE_SIZE);
                out.put("restoreMs", loaded / 1e6);
                out.put("firstTick", ticks.isEmpty() ? 0 : ticks.getFirst());
                out.put("lastTick", ticks.isEmpty() ? 0 : ticks.getLast());
            }
        }
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "restored %s in %.1f ms (%,d bytes of memory, %,d allocated);%n",
                    file, out.get("restoreMs"), out.get("memoryBytes"), out.get("allocatedBytes"));
            System.out.printf(Locale.ROOT, "the guest counted on from tick %d to %d%n", out.get("firstTick"), out.get("lastTick"));
        }
        return (Long) out.get("firstTick") > 0 ? 0 : 1;
    }
}
