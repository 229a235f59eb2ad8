package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Machine;
import dev.guestmemfd.kvm.Migration;
import dev.guestmemfd.migration.MigrationChannel;
import dev.guestmemfd.migration.MigrationListener;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.SecretKey;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "migrate", mixinStandardHelpOptions = true, subcommands = MigrateKeysCommand.class, description = {
    "Move a running guest to another process over loopback TCP, its private pages and registers",
    "sealed by the two owners: pre-copy where the memslots log dirty pages (memfd, memfd_secret),",
    "stop-and-copy where the kernel refuses (guest_memfd). --demo runs both ends here and checks",
    "that the guest's count carries on; --listen and --to run one end each, in two terminals.",
    "Between hosts: --listen ADDR:PORT and --connect ADDR:PORT with --identity and --peer, over TLS 1.3",
    "where each end proves who it is (`gmem migrate keys --out DIR` makes an example set). Without KVM",
    "they move a guest memory file instead of a guest."})
final class MigrateCommand implements Callable<Integer> {
    @Option(names = "--demo", description = "Migrate a counting guest to a child process of this command.")
    boolean demo;

    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Option(names = "--stop-and-copy", description = "Pause first and send everything once, even where pre-copy works.")
    boolean stopAndCopy;

    @Option(names = "--receive", hidden = true, description = "Be the demo's destination: listen, print the port, restore, run.")
    boolean receive;

    @Option(names = "--listen", paramLabel = "[ADDR:]PORT",
            description = "Be the destination: listen on ADDR:PORT (PORT alone: 127.0.0.1; 0: any free port, printed), take one guest, run it."
                    + " Any address but loopback needs --identity and --peer.")
    String listen;

    @Option(names = "--connect", paramLabel = "ADDR:PORT",
            description = "Be the source over the authenticated channel: run the guest, then move it to a `gmem migrate --listen` there"
                    + " that proves to be --peer. Needs --identity and --peer.")
    String connect;

    @Option(names = "--identity", paramLabel = "FILE",
            description = "This end's identity: a PKCS12 keystore (mode 0600) with one private key; its password in FILE's sibling NAME.password (0600).")
    java.nio.file.Path identity;

    @Option(names = "--peer", paramLabel = "FILE", description = "The other end's certificate (PEM or DER): the only one this end accepts.")
    java.nio.file.Path peer;

    @Option(names = "--timeout", paramLabel = "SECONDS", defaultValue = "60",
            description = "How long the authenticated channel waits for the other end: to connect, for the handshake, for each read (default: ${DEFAULT-VALUE}).")
    int timeoutSeconds;

    @Option(names = "--secret", hidden = true, description = "Fill the private pages with this text repeated (for tests that look for it on the wire).")
    String secret;

    @Option(names = "--to", paramLabel = "HOST:PORT",
            description = "Be the source: run the counting guest, then move it to a `gmem migrate --listen` there.")
    String to;

    @Option(names = "--memory-only",
            description = "With --demo: move a guest memory file owned by an architecture model, without a VM,"
                    + " as the demo does where there is no /dev/kvm.")
    boolean memoryOnly;

    @Option(names = "--owner", defaultValue = "sev-snp",
            description = "The memory-only demo's owner: sev-snp, tdx, pkvm, cca or gunyah (default: ${DEFAULT-VALUE}).")
    String owner;

    @Option(names = "--write-rate", defaultValue = "2000",
            description = "Pages per second the memory-only demo's workload rewrites while the pages travel"
                    + " (default: ${DEFAULT-VALUE}).")
    long writeRate;

    @Option(names = "--postcopy",
            description = "With --demo: the destination resumes at once and its pages follow on demand (post-copy): the"
                    + " counting guest where KVM is present, else (or with --memory-only) a model-owned file; reports"
                    + " firstAccessMs, residentMs and eagerMs (stop-and-copy of the same guest or file).")
    boolean postcopy;

    @Option(names = "--receive-memory", hidden = true, description = "Be the memory-only demo's destination.")
    boolean receiveMemory;

    @Option(names = "--run-ms", defaultValue = "800", description = "How long each side runs the guest, in ms (default: ${DEFAULT-VALUE}).")
    long runMs;

    @Mixin
    GuestOptions guest;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        // The arguments first, then the host: a wrong command line is told as such on any host.
        int modes = (demo ? 1 : 0) + (receive ? 1 : 0) + (receiveMemory ? 1 : 0) + (listen != null ? 1 : 0)
                + (to != null ? 1 : 0) + (connect != null ? 1 : 0);
        if (modes != 1) {
            throw Failure.usage(modes == 0 ? "say --demo (both ends here), or --listen PORT and --to HOST:PORT (one end each)"
                    : "--demo, --listen, --to and --connect exclude each other: choose one");
        }
        java.net.InetSocketAddress listenAt = listen == null ? null : ChannelOptions.address("--listen", listen, true);
        java.net.InetSocketAddress connectTo = connect == null ? null : ChannelOptions.address("--connect", connect, false);
        ChannelOptions channel = ChannelOptions.of(identity, peer, timeoutSeconds);
        if (channel == null && connect != null) {
            throw Failure.usage("--connect needs --identity FILE and --peer FILE: the channel proves who is at each end");
        }
        if (channel == null && listenAt != null && !listenAt.getAddress().isLoopbackAddress()) {
            throw Failure.usage("--listen " + listen + ": any address but loopback needs --identity FILE and --peer FILE");
        }
        if (channel != null && (demo || receive || to != null)) {
            throw Failure.usage("--identity and --peer go with --listen or --connect");
        }
        if (secret != null && secret.isEmpty()) {
            throw Failure.usage("--secret: an empty text");
        }
        String toHost = null;
        int toPort = 0;
        if (to != null) {
            int colon = to.lastIndexOf(':');
            if (colon <= 0 || !to.substring(colon + 1).matches("[0-9]{1,5}") || Integer.parseInt(to.substring(colon + 1)) > 65535) {
                throw Failure.usage("--to " + to + ": HOST:PORT expected, the port 0 to 65535");
            }
            toHost = to.substring(0, colon);
            toPort = Integer.parseInt(to.substring(colon + 1));
        }
        if (runMs < 0) {
            throw Failure.usage("--run-ms " + runMs + ": a duration is 0 or more");
        }
        if (memoryOnly && !demo) {
            throw Failure.usage("--memory-only goes with --demo");
        }
        if (postcopy && !demo) {
            throw Failure.usage("--postcopy goes with --demo");
        }
        if (writeRate < 0) {
            throw Failure.usage("--write-rate " + writeRate + ": a rate is 0 or more");
        }
        MemoryMigrateDemo.OwnerModel ownerModel = MemoryMigrateDemo.owner(owner);
        guest.check();
        if (receiveMemory) {
            return MemoryMigrateDemo.receive();
        }
        if (channel != null) {
            channel.load();
            return listenAt != null ? listenOnChannel(channel, listenAt) : connectOverChannel(channel, connectTo);
        }
        if (demo && postcopy) {
            if (memoryOnly || Kvm.unavailableReason().isPresent()) {
                return new PostCopyDemo(guest, ownerModel, writeRate, runMs, json).run();
            }
            return new GuestPostCopyDemo(guest, runMs, json).run();
        }
        if (demo && (memoryOnly || Kvm.unavailableReason().isPresent())) {
            return new MemoryMigrateDemo(guest, ownerModel, writeRate, runMs, json,
                    secret == null ? null : secret.getBytes(StandardCharsets.UTF_8)).run();
        }
        GuestOptions.requireKvm("migrate (it runs a guest)");
        if (receive) {
            return receiveAndRun();
        }
        if (listen != null) {
            return listenAndRun(listenAt.getPort());
        }
        if (to != null) {
            return sendTo(toHost, toPort);
        }
        HostInfo host = HostInfo.probe();
        Machine.Config config = guest.config(host);
        Process child = new ProcessBuilder(childCommand()).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        BufferedReader childOut = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8));
        String portLine = childOut.readLine();
        if (portLine == null) {
            throw new java.io.IOException("the receiving process ended before it listened (exit status "
                    + child.waitFor() + "; its error output is above)");
        }
        int port = Integer.parseInt(portLine.trim());
        Sent sent;
        try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), port)) {
            sent = send(config, socket);
        }
        Migration.Report report = sent.report();
        long allocated = sent.allocated();
        StringBuilder after = new StringBuilder();
        for (String line; (line = childOut.readLine()) != null; ) {
            after.append(line).append('\n');
        }
        int status = child.waitFor();
        String before = report.source().serial();
        String destination = after.toString().replace("\\n", "\n");
        List<Long> sourceTicks = ticks(before);
        List<Long> all = ticks(before + destination);
        boolean continued = status == 0 && all.size() > sourceTicks.size() && consecutive(all);
        Map<String, Object> out = reportJson(config, sent);
        out.put("guestContinued", continued);
        out.put("lastTickAtSource", sourceTicks.isEmpty() ? 0 : sourceTicks.getLast());
        out.put("lastTickAtDestination", all.isEmpty() ? 0 : all.getLast());
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "source printed ticks 1..%d, then the guest moved to process %d;%n",
                    out.get("lastTickAtSource"), child.pid());
            System.out.printf(Locale.ROOT, "there it printed up to tick %d (%s).%n", out.get("lastTickAtDestination"),
                    continued ? "carried on from where it stopped" : "DID NOT carry on");
            System.out.printf(Locale.ROOT, "%s on the %s backing: %s%n", out.get("path"), out.get("backing"), report.why());
            System.out.printf(Locale.ROOT, "rounds (page bytes, the last one paused): %s%n", report.roundBytes());
            System.out.printf(Locale.ROOT, "downtime %.1f ms, total %.1f ms, %,d bytes sent for %,d bytes of memory (%,d allocated)%n",
                    out.get("downtimeMs"), out.get("totalMs"), report.bytesSent(), report.memoryBytes(), allocated);
        }
        return continued ? 0 : 1;
    }

    private record Sent(Migration.Report report, long allocated) { }

    /** {@return what the source knows of a migration, as JSON fields} */
    private static Map<String, Object> reportJson(Machine.Config config, Sent sent) {
        Migration.Report report = sent.report();
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("backing", GuestOptions.name(config.backing()));
        out.put("path", report.path().name().toLowerCase(Locale.ROOT).replace('_', '-'));
        out.put("why", report.why());
        out.put("downtimeMs", report.pausedToRestoredNs() / 1e6);
        out.put("totalMs", report.totalNs() / 1e6);
        out.put("bytesSent", report.bytesSent());
        out.put("memoryBytes", report.memoryBytes());
        out.put("allocatedBytes", sent.allocated());
        out.put("roundBytes", report.roundBytes());
        return out;
    }

    /** Boots the counting guest, fills its share, runs it a while and moves it through {@code socket}. */
    private Sent send(Machine.Config config, Socket socket) throws Exception {
        return send(config, socket.getOutputStream(), socket.getInputStream(), null);
    }

    /**
     * Boots the counting guest, fills its share, runs it a while and moves it through the two
     * streams, its private pages sealed with {@code key} (an authenticated channel's session key)
     * or, when null, with a key the two ends agree on unauthenticated (loopback only).
     */
    private Sent send(Machine.Config config, java.io.OutputStream to, java.io.InputStream from, SecretKey key)
            throws Exception {
        try (Kvm kvm = Kvm.open(); Machine source = Machine.boot(kvm, config)) {
            guest.fill(source, secret == null ? null : secret.getBytes(StandardCharsets.UTF_8));
            long allocated = source.memory().pageCounts().allocated() * dev.guestmemfd.GuestMemory.PAGE_SIZE;
            Machine.Running running = source.start();
            Thread.sleep(runMs);
            try (ProgressBar bar = ProgressBar.onTerminal("migrating", allocated)) {
                Migration.Options options = Migration.Options.defaults().withPreCopy(!stopAndCopy);
                Migration.Report report = key == null ? Migration.send(running, bar.track(to), from, options)
                        : Migration.send(running, from, bar.track(to), key, options);
                return new Sent(report, allocated);
            }
        }
    }

    /** The source of a two-terminal migration. */
    private int sendTo(String host, int port) throws Exception {
        String address = host + ":" + port;
        Machine.Config config = guest.config(HostInfo.probe());
        Sent sent;
        Socket connected;
        try {
            connected = new Socket(host, port);
        } catch (java.io.IOException e) {
            throw Failure.io("--to " + address, e);
        }
        try (Socket socket = connected) {
            sent = send(config, socket);
        }
        Migration.Report report = sent.report();
        List<Long> ticks = ticks(report.source().serial());
        Map<String, Object> out = reportJson(config, sent);
        out.put("lastTickAtSource", ticks.isEmpty() ? 0 : ticks.getLast());
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "the guest counted to %d here, then moved to %s by %s (%s)%n",
                    out.get("lastTickAtSource"), address, out.get("path"), report.why());
            System.out.printf(Locale.ROOT, "downtime %.1f ms, total %.1f ms, %,d bytes sent for %,d bytes of memory%n",
                    out.get("downtimeMs"), out.get("totalMs"), report.bytesSent(), report.memoryBytes());
        }
        return 0;
    }

    /**
     * The destination of a two-terminal migration: loopback only, as the key agreement is not
     * authenticated (see docs/SNAPSHOT.md).
     */
    private int listenAndRun(int port) throws Exception {
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(port, 1, InetAddress.getLoopbackAddress())) {
            System.out.println("listening on 127.0.0.1:" + server.getLocalPort());
            System.out.flush();
            try (Socket socket = server.accept(); Machine machine = Migration.receive(kvm, socket)) {
                return runReceived(machine, socket.getRemoteSocketAddress().toString());
            }
        }
    }

    /** Runs a guest that arrived from {@code from} and reports how its count carried on. */
    private int runReceived(Machine machine, String from) throws InterruptedException {
        List<Long> ticks = ticks(machine.run(Duration.ofMillis(runMs)).serial());
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("backing", GuestOptions.name(machine.config().backing()));
        out.put("memoryBytes", machine.config().memorySize());
        out.put("firstTick", ticks.isEmpty() ? 0 : ticks.getFirst());
        out.put("lastTick", ticks.isEmpty() ? 0 : ticks.getLast());
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "received a guest from %s; it counted on from tick %d to %d%n",
                    from, out.get("firstTick"), out.get("lastTick"));
        }
        return ticks.isEmpty() ? 1 : 0;
    }

    /**
     * The destination between hosts: listens on any address, takes one connection that proves
     * to be the peer, and receives a guest (with KVM) or a guest memory file (without).
     */
    private int listenOnChannel(ChannelOptions channel, java.net.InetSocketAddress at) throws Exception {
        try (MigrationListener listener = MigrationListener.bind(at, channel.identity(), channel.peer())) {
            InetSocketAddress bound = listener.address();
            System.out.println("listening on " + bound.getAddress().getHostAddress() + ":" + bound.getPort()
                    + " for " + channel.peer().certificate().getSubjectX500Principal().getName());
            System.out.flush();
            try (MigrationChannel ch = listener.accept(channel.timeout())) {
                if (!Kvm.available()) {
                    Map<String, Object> out = MemoryMigrateDemo.receive(ch.in(), ch.out(), ch.sealingKey());
                    out.put("peer", ch.peerName());
                    print(out, "received a guest memory file of %,d bytes owned by a %s model from %s; every page %s%n",
                            out.get("memoryBytes"), out.get("owner"), ch.peerName(),
                            Boolean.TRUE.equals(out.get("checkPassed")) ? "checked out" : "DID NOT check out");
                    return Boolean.TRUE.equals(out.get("checkPassed")) ? 0 : 1;
                }
                try (Kvm kvm = Kvm.open(); Machine machine = Migration.receive(kvm, ch.in(), ch.out(), ch.sealingKey())) {
                    return runReceived(machine, ch.peerName());
                }
            }
        }
    }

    /** The source between hosts: connects, proves both ends, and moves a guest (with KVM) or a guest memory file. */
    private int connectOverChannel(ChannelOptions channel, java.net.InetSocketAddress address) throws Exception {
        if (!Kvm.available()) {
            MemoryMigrateDemo memoryOnly = new MemoryMigrateDemo(guest, MemoryMigrateDemo.owner(owner), writeRate, runMs,
                    json, secret == null ? null : secret.getBytes(StandardCharsets.UTF_8));
            Backing backing = memoryOnly.backing();
            try (MigrationChannel ch = MigrationChannel.connect(address, channel.identity(), channel.peer(), channel.timeout())) {
                Map<String, Object> out = memoryOnly.send(backing, ch.in(), ch.out(), ch.sealingKey());
                out.put("peer", ch.peerName());
                boolean arrived = Boolean.TRUE.equals(out.get("guestContinued"));
                print(out, "moved a guest memory file of %,d bytes owned by a %s model to %s: %s%n", out.get("memoryBytes"),
                        out.get("owner"), ch.peerName(), arrived ? "every page checked out there" : "IT DID NOT CHECK OUT THERE");
                return arrived ? 0 : 1;
            }
        }
        Machine.Config config = guest.config(HostInfo.probe());
        Sent sent;
        try (MigrationChannel ch = MigrationChannel.connect(address, channel.identity(), channel.peer(), channel.timeout())) {
            sent = send(config, ch.out(), ch.in(), ch.sealingKey());
        }
        List<Long> ticks = ticks(sent.report().source().serial());
        Map<String, Object> out = reportJson(config, sent);
        out.put("lastTickAtSource", ticks.isEmpty() ? 0 : ticks.getLast());
        print(out, "the guest counted to %d here, then moved to %s over the authenticated channel by %s%n",
                out.get("lastTickAtSource"), address, out.get("path"));
        return 0;
    }

    private void print(Map<String, Object> out, String format, Object... args) {
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, format, args);
        }
    }

    /** The demo's destination: prints its port, restores what arrives, runs it, prints the guest's output. */
    private int receiveAndRun() throws Exception {
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            System.out.println(server.getLocalPort());
            System.out.flush();
            try (Socket socket = server.accept(); Machine machine = Migration.receive(kvm, socket)) {
                String serial = machine.run(Duration.ofMillis(runMs)).serial();
                System.out.print(serial.replace("\n", "\\n"));
                System.out.println();
            }
        }
        return 0;
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
        command.add("--receive");
        command.add("--run-ms=" + runMs);
        return command;
    }

    static List<Long> ticks(String output) {
        Matcher m = Pattern.compile("tick ([0-9a-f]{8})\n").matcher(output);
        return m.results().map(r -> Long.parseLong(r.group(1), 16)).toList();
    }

    static boolean consecutive(List<Long> ticks) {
        for (int i = 0; i < ticks.size(); i++) {
            if (ticks.get(i) != i + 1L) {
                return false;
            }
        }
        return true;
    }
}
