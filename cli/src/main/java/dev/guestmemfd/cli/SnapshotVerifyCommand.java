package dev.guestmemfd.cli;

import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.SnapshotContents;
import java.io.BufferedInputStream;
import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import javax.crypto.SecretKey;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "verify", mixinStandardHelpOptions = true, description = {
    "Check a snapshot file's integrity (every record, every sealed page, the sealed digest at the end)",
    "and say what it holds: the machine, its pages shared and private, holes, poisoned pages, bytes",
    "and rounds.",
    "Runs nothing and needs no /dev/kvm."})
final class SnapshotVerifyCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "FILE", description = "The snapshot file.")
    Path file;

    @Option(names = "--key", paramLabel = "FILE", description = "The key file (default: FILE.key).")
    Path key;

    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Override
    public Integer call() {
        UserFiles.requireReadable("snapshot file", file);
        Path keyFile = key != null ? key : SnapshotKey.besides(file);
        SecretKey secret = SnapshotKey.read(keyFile);
        List<byte[]> states = new ArrayList<>();
        SnapshotContents contents;
        long fileBytes;
        try (InputStream in = new BufferedInputStream(Files.newInputStream(file), 1 << 16)) {
            fileBytes = Files.size(file);
            // A guard of its own: checking a file does not count as restoring it.
            contents = Snapshot.reader(secret, in, new Snapshot.ReplayGuard()).verify(states::add);
        } catch (GuestMemoryException e) {
            throw new Failure(e.errno(), "snapshot file " + file + ": " + e.getMessage());
        } catch (IOException e) {
            throw Failure.io("snapshot file " + file, e);
        }
        Map<String, Object> machine = states.isEmpty() ? null : machine(states.getFirst());
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("file", file.toString());
        out.put("keyFile", keyFile.toString());
        out.put("valid", true);
        out.put("formatVersion", Snapshot.VERSION);
        out.put("fileBytes", fileBytes);
        out.put("memoryBytes", contents.fileSize());
        out.put("machine", machine);
        Map<String, Object> pages = new LinkedHashMap<>();
        pages.put("total", contents.fileSize() / GuestMemory.PAGE_SIZE);
        pages.put("shared", contents.sharedPages());
        pages.put("private", contents.privatePages());
        pages.put("sharedHoles", contents.sharedHoles());
        pages.put("privateHoles", contents.privateHoles());
        pages.put("unrecorded", contents.unrecordedPages());
        pages.put("poisoned", contents.poisonedPages());
        out.put("pages", pages);
        Map<String, Object> bytes = new LinkedHashMap<>();
        bytes.put("shared", contents.sharedBytes());
        bytes.put("private", contents.privateBytes());
        bytes.put("ownerState", contents.stateBytes());
        out.put("bytes", bytes);
        out.put("records", contents.records());
        out.put("ownerStates", contents.states());
        out.put("rounds", contents.rounds());
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "%s: a whole snapshot (format %d), every record and seal checked with %s%n",
                    file, Snapshot.VERSION, keyFile);
            if (machine != null) {
                long vcpus = (Long) machine.get("vcpus");
                System.out.printf(Locale.ROOT, "machine       the %s guest, %d vCPU%s, %s of memory on the %s backing%n",
                        machine.get("program"), vcpus, vcpus == 1 ? "" : "s", MemoryMapView.human(contents.fileSize()), machine.get("backing"));
            }
            System.out.printf(Locale.ROOT, "pages         %,d in all: %,d shared and %,d private hold memory; %,d shared and %,d private are holes%s%n",
                    contents.fileSize() / GuestMemory.PAGE_SIZE, contents.sharedPages(), contents.privatePages(),
                    contents.sharedHoles(), contents.privateHoles(),
                    contents.unrecordedPages() == 0 ? "" : "; " + contents.unrecordedPages() + " not recorded");
            System.out.printf(Locale.ROOT, "bytes         %,d of shared pages in the clear, %,d of private pages sealed, %,d of owner state (%d records); %,d in the file%n",
                    contents.sharedBytes(), contents.privateBytes(), contents.stateBytes(), contents.states(), fileBytes);
            if (contents.poisonedPages() > 0) {
                System.out.printf(Locale.ROOT, "poisoned      %,d page%s failed at the source (a memory failure): no bytes of %s travel,"
                        + " and a restore marks %s poisoned again%n", contents.poisonedPages(),
                        contents.poisonedPages() == 1 ? "" : "s", contents.poisonedPages() == 1 ? "it" : "them",
                        contents.poisonedPages() == 1 ? "it" : "them");
            }
            System.out.printf(Locale.ROOT, "rounds        %d (%,d records)%n", contents.rounds(), contents.records());
        }
        return 0;
    }

    /**
     * {@return the machine a snapshot's first owner state describes, or null when it is not a
     * machine's description} The layout is the KVM owner's ({@code Migration}): u64 memory
     * size, UTF backing, UTF program, u32 vCPUs, u8 preallocate, u8 hypercalls.
     */
    static Map<String, Object> machine(byte[] description) {
        try {
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(description));
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("memoryBytes", in.readLong());
            m.put("backing", in.readUTF().toLowerCase(Locale.ROOT));
            m.put("program", in.readUTF().toLowerCase(Locale.ROOT));
            m.put("vcpus", (long) in.readInt());
            in.readBoolean();
            in.readBoolean();
            return in.available() == 0 ? m : null;
        } catch (IOException e) {
            return null;
        }
    }
}
