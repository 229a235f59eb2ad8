package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.migration.FileDescription;
import dev.guestmemfd.migration.MemoryMigration;
import dev.guestmemfd.migration.PageWorkload;
import dev.guestmemfd.migration.X25519Agreement;
import dev.guestmemfd.models.ArchitectureModel;
import dev.guestmemfd.models.CcaModel;
import dev.guestmemfd.models.GunyahModel;
import dev.guestmemfd.models.PkvmModel;
import dev.guestmemfd.models.SevSnpModel;
import dev.guestmemfd.models.TdxModel;
import java.io.BufferedInputStream;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import javax.crypto.SecretKey;

/**
 * {@code gmem migrate --demo} where there is no KVM (or with {@code --memory-only}): a guest
 * memory file owned by an architecture model moves to a child process while a workload writes
 * its shared pages through the host and its private pages through the owner; the child checks
 * every page's attribute and bytes against what the workload wrote, and the model's state.
 * Its report has the KVM demo's fields; {@code guestContinued} says the workload's check
 * passed at the destination.
 */
final class MemoryMigrateDemo {
    /** The child waits this long for the source, at most: a demo never hangs. */
    private static final int ACCEPT_TIMEOUT_MS = 120_000;
    /** The destination's verdict, sent back after its check of every page. */
    private static final int CHECK_PASSED = 1;
    private static final int CHECK_FAILED = 0;

    /** The architecture models a demo file may be owned by, by their command-line names. */
    enum OwnerModel {
        SEV_SNP, TDX, PKVM, CCA, GUNYAH;

        ArchitectureModel make() {
            return switch (this) {
                case SEV_SNP -> new SevSnpModel();
                case TDX -> new TdxModel();
                case PKVM -> new PkvmModel();
                case CCA -> new CcaModel();
                case GUNYAH -> new GunyahModel();
            };
        }

        /** {@return the model whose architecture is {@code kind}, as a carried state names it} */
        static ArchitectureModel forKind(String kind) {
            for (OwnerModel m : values()) {
                ArchitectureModel model = m.make();
                if (model.architecture().equals(kind)) {
                    return model;
                }
            }
            throw new IllegalArgumentException("no model of the architecture " + kind);
        }
    }

    private final GuestOptions guest;
    private final OwnerModel owner;
    private final long writeRate;
    private final long runMs;
    private final boolean json;
    /** What the workload writes at the start of every private page; empty for nothing. */
    private final byte[] marker;

    MemoryMigrateDemo(GuestOptions guest, OwnerModel owner, long writeRate, long runMs, boolean json, byte[] marker) {
        this.marker = marker == null ? new byte[0] : marker.clone();
        this.guest = guest;
        this.owner = owner;
        this.writeRate = writeRate;
        this.runMs = runMs;
        this.json = json;
    }

    /** {@return a backing for a mappable file without KVM: the one asked for, else memfd} */
    Backing backing() {
        if (guest.backing == null) {
            return Backing.MEMFD;
        }
        if (guest.backing == Backing.KERNEL) {
            throw Failure.usage("--backing kernel: a memory-only migration has no VM to own a guest_memfd;"
                    + " use memfd or secret");
        }
        GuestOptions.requireAvailable(guest.backing);
        return guest.backing;
    }

    int run() throws Exception {
        Backing backing = backing();
        Process child = new ProcessBuilder(childCommand()).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        try (BufferedReader childOut = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
            String portLine = childOut.readLine();
            if (portLine == null) {
                throw new IOException("the receiving process ended before it listened (exit status "
                        + child.waitFor() + "; its error output is above)");
            }
            int port = Integer.parseInt(portLine.trim());
            Map<String, Object> out;
            try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), port)) {
                // Two processes of this machine: the unauthenticated agreement is enough here.
                SecretKey key = X25519Agreement.agree(socket.getInputStream(), socket.getOutputStream());
                out = send(backing, socket.getInputStream(), socket.getOutputStream(), key);
            }
            String answer = childOut.readLine();
            if (!child.waitFor(60, TimeUnit.SECONDS)) {
                child.destroyForcibly();
                throw new IOException("the receiving process did not end within 60 s");
            }
            boolean checked = (Boolean) out.get("guestContinued") && child.exitValue() == 0;
            out.put("guestContinued", checked);
            if (!checked) {
                out.put("destinationSaid", answer == null ? "nothing" : answer);
            }
            if (json) {
                System.out.println(Json.write(out));
            } else {
                System.out.printf(Locale.ROOT, "a %s file owned by a %s model moved to process %d while its workload"
                        + " wrote %d pages;%n", MemoryMapView.human(guest.memory), out.get("owner"), child.pid(),
                        out.get("workloadWrites"));
                System.out.printf(Locale.ROOT, "there every page's attribute and bytes %s.%n",
                        checked ? "checked out" : "DID NOT check out: " + answer);
                System.out.printf(Locale.ROOT, "rounds (page bytes, the last one paused): %s%n", out.get("roundBytes"));
                System.out.printf(Locale.ROOT, "downtime %.1f ms, total %.1f ms, %,d bytes sent for %,d bytes of memory"
                        + " (%,d allocated)%n", out.get("downtimeMs"), out.get("totalMs"), out.get("bytesSent"),
                        out.get("memoryBytes"), out.get("allocatedBytes"));
            }
            return checked ? 0 : 1;
        } finally {
            if (child.isAlive()) {
                child.destroyForcibly();
            }
        }
    }

    /**
     * The source's half over any channel that holds a session key (a loopback socket with an
     * agreed key, or the authenticated channel between hosts): makes the file, runs the
     * workload a while, migrates, and reads the destination's verdict.
     *
     * @return the report's fields; {@code guestContinued} is the destination's verdict
     */
    Map<String, Object> send(Backing backing, InputStream from, OutputStream to, SecretKey key) throws Exception {
        long size = guest.memory;
        long flags = Flag.MMAP.bit() | Flag.INIT_SHARED.bit() | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
        ArchitectureModel model = owner.make();
        MemoryMigration.Report report;
        long allocated;
        long writes;
        int filled;
        try (GuestMemory memory = GuestMemory.create(size, flags, backing)) {
            var binding = memory.bind(model, 0, size);
            try (PageWorkload workload = PageWorkload.start(binding, guest.allocatedPercent / 100.0, size, writeRate, marker)) {
                filled = workload.filledPages();
                allocated = memory.pageCounts().allocated() * GuestMemory.PAGE_SIZE;
                Thread.sleep(runMs);
                report = MemoryMigration.send(binding, workload, List.of(model, workload), from, to, key,
                        MemoryMigration.Options.defaults());
                writes = workload.writes();
            }
        }
        int verdict = from.read();
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("backing", GuestOptions.name(backing));
        out.put("path", "memory-only");
        out.put("owner", model.architecture());
        out.put("why", "no /dev/kvm here, or --memory-only: the file and its owner's state move without a VM");
        out.put("downtimeMs", report.pausedToRestoredNs() / 1e6);
        out.put("totalMs", report.totalNs() / 1e6);
        out.put("bytesSent", report.bytesSent());
        out.put("memoryBytes", report.memoryBytes());
        out.put("allocatedBytes", allocated);
        out.put("filledPages", (long) filled);
        out.put("workloadWrites", writes);
        out.put("roundBytes", report.roundBytes());
        out.put("guestContinued", verdict == CHECK_PASSED);
        return out;
    }

    /**
     * The demo's destination: prints its port, takes one file, checks it against its workload's
     * state and prints one line of JSON: whether the check passed, what differed, the owner.
     */
    static int receive() throws Exception {
        try (ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            server.setSoTimeout(ACCEPT_TIMEOUT_MS);
            System.out.println(server.getLocalPort());
            System.out.flush();
            try (Socket socket = server.accept()) {
                socket.setSoTimeout(ACCEPT_TIMEOUT_MS);
                InputStream in = new BufferedInputStream(socket.getInputStream(), 1 << 16);
                SecretKey key = X25519Agreement.agree(in, socket.getOutputStream());
                Map<String, Object> out = receive(in, socket.getOutputStream(), key);
                System.out.println(Json.write(out).replace("\n", ""));
                return Boolean.TRUE.equals(out.get("checkPassed")) ? 0 : 1;
            }
        }
    }

    /**
     * The destination's half over any channel that holds a session key: receives the file and
     * its owner's state, checks every page against the workload's state, and sends the verdict
     * back, so the source can say whether the guest's memory carried on.
     *
     * @return the destination's report as JSON fields
     */
    static Map<String, Object> receive(InputStream from, OutputStream to, SecretKey key) throws IOException {
        List<ArchitectureModel> owner = new ArrayList<>();
        MemoryMigration.Arrival arrival = MemoryMigration.receive(from, to, key, new Snapshot.ReplayGuard(),
                (FileDescription d) -> {
                    List<dev.guestmemfd.migration.CarriedState> carried = new ArrayList<>();
                    for (String kind : d.carried()) {
                        if (kind.equals(PageWorkload.KIND)) {
                            carried.add(PageWorkload.check());
                        } else {
                            owner.add(OwnerModel.forKind(kind));
                            carried.add(owner.getLast());
                        }
                    }
                    if (owner.size() != 1) {
                        throw new IllegalArgumentException("the stream carries " + owner.size() + " owners");
                    }
                    return new MemoryMigration.Destination(d.create(), owner.getFirst(), carried);
                });
        try (GuestMemory memory = arrival.memory()) {
            List<String> problems = new ArrayList<>();
            for (var state : arrival.carried()) {
                if (state instanceof PageWorkload.Check check) {
                    problems.addAll(check.verify(arrival.binding()));
                }
            }
            to.write(problems.isEmpty() ? CHECK_PASSED : CHECK_FAILED);
            to.flush();
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("checkPassed", problems.isEmpty());
            out.put("problems", problems);
            out.put("owner", owner.getFirst().architecture());
            out.put("memoryBytes", memory.size());
            out.put("privateBytes", memory.pageCounts().privates() * GuestMemory.PAGE_SIZE);
            return out;
        }
    }

    private List<String> childCommand() {
        List<String> command = new ArrayList<>();
        command.add(ProcessHandle.current().info().command().orElse(System.getProperty("java.home") + "/bin/java"));
        command.add("--enable-native-access=dev.guestmemfd.linux,dev.guestmemfd,dev.guestmemfd.kvm");
        command.add("-Dgmem.root=" + System.getProperty("gmem.root", "."));
        command.add("-p");
        command.add(System.getProperty("jdk.module.path"));
        command.add("-m");
        command.add("dev.guestmemfd.cli/dev.guestmemfd.cli.Gmem");
        command.add("migrate");
        command.add("--receive-memory");
        return command;
    }

    /** {@return the owner named {@code name} on the command line: sev-snp, tdx, pkvm, cca or gunyah} */
    static OwnerModel owner(String name) {
        try {
            return OwnerModel.valueOf(name.toUpperCase(Locale.ROOT).replace('-', '_'));
        } catch (IllegalArgumentException e) {
            throw Failure.usage("--owner " + name + ": one of sev-snp, tdx, pkvm, cca, gunyah");
        }
    }
}
