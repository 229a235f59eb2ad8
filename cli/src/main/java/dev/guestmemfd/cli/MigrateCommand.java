package dev.guestmemfd.cli;

import dev.guestmemfd.kvm.GuestProgram;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Machine;
import dev.guestmemfd.kvm.Migration;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "migrate", description = {
    "Move a running guest to another process over loopback TCP (stop-and-copy), its private",
    "pages sealed by the owners; --demo runs both ends here and checks the guest carries on."})
final class MigrateCommand implements Callable<Integer> {
    @Option(names = "--demo", description = "Migrate a counting guest to a child process of this command.")
    boolean demo;

    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Option(names = "--receive", hidden = true, description = "Be the destination: listen, print the port, restore, run.")
    boolean receive;

    @Option(names = "--run-ms", defaultValue = "800", description = "How long each side runs the guest, in ms.")
    long runMs;

    @Override
    public Integer call() throws Exception {
        if (receive) {
            return receiveAndRun();
        }
        if (!demo) {
            System.err.println("gmem: migrate needs --demo (two processes of this machine) for now");
            return 2;
        }
        if (!Kvm.available()) {
            System.err.println("gmem: migrate needs /dev/kvm, which this host lacks");
            return 1;
        }
        Process child = new ProcessBuilder(childCommand()).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        BufferedReader childOut = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8));
        int port = Integer.parseInt(childOut.readLine().trim());
        HostInfo host = HostInfo.probe();
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, host.preferredBacking(), 1).withMemorySize(64L << 20);
        long start = System.nanoTime();
        String before;
        Migration.Report report;
        try (Kvm kvm = Kvm.open(); Machine source = Machine.boot(kvm, config);
             Socket socket = new Socket(InetAddress.getLoopbackAddress(), port)) {
            before = source.run(Duration.ofMillis(runMs)).serial();
            long paused = System.nanoTime();
            report = Migration.send(source, socket, paused);
        }
        long total = System.nanoTime() - start;
        StringBuilder after = new StringBuilder();
        for (String line; (line = childOut.readLine()) != null; ) {
            after.append(line).append('\n');
        }
        int status = child.waitFor();
        String destination = after.toString().replace("\\n", "\n");
        List<Long> sourceTicks = ticks(before);
        List<Long> all = ticks(before + destination);
        boolean continued = status == 0 && all.size() > sourceTicks.size() && consecutive(all);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("backing", config.backing().name().toLowerCase(java.util.Locale.ROOT));
        out.put("downtimeMs", report.pausedToRestoredNs() / 1e6);
        out.put("totalMs", total / 1e6);
        out.put("bytesSent", report.bytesSent());
        out.put("memoryBytes", report.memoryBytes());
        out.put("guestContinued", continued);
        out.put("lastTickAtSource", sourceTicks.isEmpty() ? 0 : sourceTicks.getLast());
        out.put("lastTickAtDestination", all.isEmpty() ? 0 : all.getLast());
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(java.util.Locale.ROOT, "source printed ticks 1..%d, then the guest moved to process %d;%n",
                    out.get("lastTickAtSource"), child.pid());
            System.out.printf(java.util.Locale.ROOT, "there it printed up to tick %d (%s).%n", out.get("lastTickAtDestination"),
                    continued ? "carried on from where it stopped" : "DID NOT carry on");
            System.out.printf(java.util.Locale.ROOT, "downtime %.1f ms, total %.1f ms, %,d bytes sent for %,d bytes of memory%n",
                    out.get("downtimeMs"), out.get("totalMs"), report.bytesSent(), report.memoryBytes());
        }
        return continued ? 0 : 1;
    }

    /** The destination: prints its port, restores what arrives, runs it, prints the guest's output. */
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
