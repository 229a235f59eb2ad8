package dev.guestmemfd.cli;

import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Machine;
import dev.guestmemfd.kvm.Migration;
import java.io.BufferedOutputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import javax.crypto.SecretKey;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "snapshot", mixinStandardHelpOptions = true, subcommands = SnapshotVerifyCommand.class, description = {
    "Run the counting guest for a while, pause it and save it to a file: its description, its",
    "allocated pages (private ones sealed with AES-GCM) and its registers. `gmem restore FILE`",
    "brings it back and it counts on. `gmem snapshot verify FILE` checks a snapshot file on any host."})
final class SnapshotCommand implements Callable<Integer> {
    @Parameters(index = "0", defaultValue = "guest.gsnap", description = "The snapshot file to write (default: ${DEFAULT-VALUE}).")
    Path file;

    @Option(names = "--key", description = "The key file: made (0600) if absent (default: FILE.key).")
    Path key;

    @Option(names = "--run-ms", defaultValue = "800", description = "How long the guest runs before the snapshot, in ms (default: ${DEFAULT-VALUE}).")
    long runMs;

    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Mixin
    GuestOptions guest;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        // The arguments and files first, then the host: a wrong path is told as such on any host.
        guest.check();
        if (runMs < 0) {
            throw Failure.usage("--run-ms " + runMs + ": a duration is 0 or more");
        }
        UserFiles.requireWritable("snapshot file", file);
        Path keyFile = key != null ? key : SnapshotKey.besides(file);
        if (Files.exists(keyFile)) {
            SnapshotKey.read(keyFile);
        } else {
            UserFiles.requireWritable("key file", keyFile);
        }
        GuestOptions.requireKvm("snapshot (it runs a guest to save; `gmem snapshot verify FILE` checks a file without KVM)");
        Machine.Config config = guest.config(HostInfo.probe());
        SecretKey secret = SnapshotKey.readOrCreate(keyFile);
        Path partial = file.resolveSibling(file.getFileName() + ".partial");
        List<Long> ticks;
        long allocated;
        long pageBytes;
        long nanos;
        try (Kvm kvm = Kvm.open(); Machine machine = Machine.boot(kvm, config)) {
            guest.fill(machine);
            ticks = MigrateCommand.ticks(machine.run(Duration.ofMillis(runMs)).serial());
            allocated = machine.memory().pageCounts().allocated() * GuestMemory.PAGE_SIZE;
            long start = System.nanoTime();
            // Written aside and renamed, so a FILE is always a whole snapshot.
            try (ProgressBar bar = ProgressBar.onTerminal("saving   ", allocated);
                 OutputStream out = new BufferedOutputStream(bar.track(Files.newOutputStream(partial)), 1 << 16)) {
                pageBytes = Migration.save(machine, secret, out);
            } catch (Exception e) {
                Files.deleteIfExists(partial);
                throw e;
            }
            Files.move(partial, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            nanos = System.nanoTime() - start;
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("file", file.toString());
        out.put("keyFile", keyFile.toString());
        out.put("backing", GuestOptions.name(config.backing()));
        out.put("memoryBytes", config.memorySize());
        out.put("allocatedBytes", allocated);
        out.put("pageBytes", pageBytes);
        out.put("fileBytes", Files.size(file));
        out.put("saveMs", nanos / 1e6);
        out.put("lastTick", ticks.isEmpty() ? 0 : ticks.getLast());
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "the guest counted to %d, then paused; saved to %s in %.1f ms (key: %s)%n",
                    out.get("lastTick"), file, nanos / 1e6, keyFile);
            System.out.printf(Locale.ROOT, "%,d bytes of file for %,d bytes of memory, %,d of them allocated%n",
                    out.get("fileBytes"), config.memorySize(), allocated);
            System.out.println("run `gmem restore " + file + "` to bring it back");
        }
        return ticks.isEmpty() ? 1 : 0;
    }
}
