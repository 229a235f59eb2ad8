package dev.guestmemfd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.testing.Relay;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Two hosts on this machine: a source and a destination network namespace, joined only
 * through a third that relays their traffic as a man in the middle (IP forwarding off, so
 * nothing passes but what it relays). Each end is {@code ./gmem migrate} run in its namespace
 * with {@code ip netns exec}; the payload is a KVM guest where this process can use KVM, and a
 * guest memory file otherwise. The man in the middle records, alters a byte, replays, and
 * answers with its own identity: it must learn nothing and change nothing.
 *
 * <p>Needs root (CAP_NET_ADMIN) and {@code ip}: skipped with the reason elsewhere. Everything
 * it makes (three namespaces, their veth pairs) is removed afterwards, by a shutdown hook too;
 * traffic goes only to the addresses inside them (10.213.N.0/30 and 10.213.N.4/30, N random).
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class TwoHostMigrationIT {
    static final Path ROOT = GmemIT.ROOT;
    static final String SECRET = "TOP-SECRET-private-page-pattern-4b7e19";

    static String id;
    static String source;
    static String middle;
    static String destination;
    static String sourceAddress;
    static String middleToSource;
    static String middleToDestination;
    static String destinationAddress;
    static Thread cleanup;
    static final List<Process> STARTED = new CopyOnWriteArrayList<>();
    static final List<String> MADE = new CopyOnWriteArrayList<>();

    @TempDir
    static Path dir;
    static Path keys;
    static int nextPort = 40100;

    @BeforeAll
    static void makeTwoHostsAndAMiddle() throws Exception {
        String refusal = refusal();
        assumeTrue(refusal == null, () -> "two hosts in network namespaces need root and ip netns: " + refusal);
        SecureRandom random = new SecureRandom();
        id = Long.toString(ProcessHandle.current().pid() % 100_000) + (char) ('a' + random.nextInt(26));
        int net = 1 + random.nextInt(254);
        source = "gmsrc" + id;
        middle = "gmmid" + id;
        destination = "gmdst" + id;
        sourceAddress = "10.213." + net + ".1";
        middleToSource = "10.213." + net + ".2";
        middleToDestination = "10.213." + net + ".5";
        destinationAddress = "10.213." + net + ".6";
        cleanup = new Thread(TwoHostMigrationIT::removeAll, "remove-netns");
        Runtime.getRuntime().addShutdownHook(cleanup);
        for (String ns : List.of(source, middle, destination)) {
            ip("netns", "add", ns);
            MADE.add(ns);
            ip("-n", ns, "link", "set", "lo", "up");
        }
        link("vs" + id, source, sourceAddress, "vms" + id, middle, middleToSource);
        link("vd" + id, destination, destinationAddress, "vmd" + id, middle, middleToDestination);
        // The middle must relay: with forwarding off, nothing crosses it at the IP layer.
        run(List.of("ip", "netns", "exec", middle, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"));
        keys = dir.resolve("keys");
        GmemIT.Result made = GmemIT.gmem(null, "migrate", "keys", "--out", keys.toString());
        assertThat(made.status()).as(made.err()).isZero();
    }

    @AfterAll
    static void removeEverything() {
        removeAll();
        if (cleanup != null) {
            try {
                Runtime.getRuntime().removeShutdownHook(cleanup);
            } catch (IllegalStateException shuttingDown) {
                // The hook runs anyway.
            }
        }
    }

    /** Kills what this test started and deletes the namespaces (their veth ends go with them). */
    static synchronized void removeAll() {
        for (Process p : STARTED) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
        }
        STARTED.clear();
        for (String ns : MADE) {
            try {
                run(List.of("ip", "netns", "del", ns));
            } catch (IOException | InterruptedException e) {
                System.err.println("TwoHostMigrationIT: could not delete netns " + ns + ": " + e.getMessage());
            }
        }
        MADE.clear();
    }

    /** {@return why this host cannot make network namespaces, or null when it can} */
    static String refusal() throws InterruptedException {
        try {
            Process p = new ProcessBuilder("ip", "netns", "list").redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (!p.waitFor(20, TimeUnit.SECONDS) || p.exitValue() != 0) {
                return "ip netns list failed: " + out.strip();
            }
        } catch (IOException e) {
            return "no ip command: " + e.getMessage();
        }
        String probe = "gmprobe" + ProcessHandle.current().pid();
        try {
            run(List.of("ip", "netns", "add", probe));
            run(List.of("ip", "netns", "del", probe));
            return null;
        } catch (IOException e) {
            return e.getMessage();
        }
    }

    static void link(String a, String nsA, String addressA, String b, String nsB, String addressB) throws Exception {
        ip("link", "add", a, "type", "veth", "peer", "name", b);
        ip("link", "set", a, "netns", nsA);
        ip("link", "set", b, "netns", nsB);
        ip("-n", nsA, "addr", "add", addressA + "/30", "dev", a);
        ip("-n", nsB, "addr", "add", addressB + "/30", "dev", b);
        ip("-n", nsA, "link", "set", a, "up");
        ip("-n", nsB, "link", "set", b, "up");
    }

    static void ip(String... args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>();
        command.add("ip");
        command.addAll(List.of(args));
        run(command);
    }

    static void run(List<String> command) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(30, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IOException(String.join(" ", command) + ": did not finish");
        }
        if (p.exitValue() != 0) {
            throw new IOException(String.join(" ", command) + ": exit " + p.exitValue() + ": " + out.strip());
        }
    }

    // ------------------------------------------------------------------ processes in the namespaces

    /** A process started in a namespace, its output collected in files. */
    record Started(Process process, Path out, Path err, BufferedReader lines) {
        GmemIT.Result await() throws Exception {
            assertThat(process.waitFor(180, TimeUnit.SECONDS)).as("finished: %s", out).isTrue();
            StringBuilder rest = new StringBuilder();
            for (String line; (line = lines.readLine()) != null; ) {
                rest.append(line).append('\n');
            }
            return new GmemIT.Result(process.exitValue(), rest.toString(), Files.readString(err));
        }
    }

    static Started start(String ns, List<String> command) throws IOException {
        List<String> all = new ArrayList<>(List.of("ip", "netns", "exec", ns));
        all.addAll(command);
        ProcessBuilder pb = new ProcessBuilder(all).directory(ROOT.toFile());
        pb.environment().put("GMEM_SKIP_BUILD", "1");
        Path err = Files.createTempFile(dir, ns, ".err");
        pb.redirectError(err.toFile());
        Process p = pb.start();
        STARTED.add(p);
        p.getOutputStream().close();
        return new Started(p, null, err, new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8)));
    }

    static Started gmem(String ns, String... args) throws IOException {
        List<String> command = new ArrayList<>();
        command.add(ROOT.resolve("gmem").toString());
        command.addAll(List.of(args));
        return start(ns, command);
    }

    /** The man in the middle: the test-jar's Relay, run in the middle namespace by this JDK. */
    static Started relay(String... args) throws Exception {
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.add("-cp");
        command.add(Path.of(Relay.class.getProtectionDomain().getCodeSource().getLocation().toURI()).toString());
        command.add(Relay.class.getName());
        command.addAll(List.of(args));
        return start(middle, command);
    }

    /** Starts the destination and waits until it listens. */
    static Started destination(int port, String identity, String peer) throws Exception {
        Started d = gmem(destination, "migrate", "--listen", destinationAddress + ":" + port, "--json", "--timeout", "60",
                "--identity", keys.resolve(identity + ".p12").toString(), "--peer", keys.resolve(peer + ".crt").toString());
        String first = d.lines().readLine();
        assertThat(first).as("the destination listens; its errors: %s", first == null ? Files.readString(d.err()) : "")
                .startsWith("listening on " + destinationAddress + ":" + port);
        return d;
    }

    static Started startRelay(int listenPort, int targetPort, String... more) throws Exception {
        List<String> args = new ArrayList<>(List.of("--listen", middleToSource + ":" + listenPort,
                "--to", destinationAddress + ":" + targetPort, "--timeout-ms", "150000"));
        args.addAll(List.of(more));
        Started r = relay(args.toArray(String[]::new));
        String first = r.lines().readLine();
        assertThat(first).as("the relay listens; its errors: %s", first == null ? Files.readString(r.err()) : "")
                .isEqualTo("relaying " + listenPort);
        return r;
    }

    static Started sourceTo(String address, int port, String identity, String peer) throws IOException {
        return gmem(source, "migrate", "--connect", address + ":" + port, "--json", "--timeout", "60",
                "--identity", keys.resolve(identity + ".p12").toString(), "--peer", keys.resolve(peer + ".crt").toString(),
                "--memory", "16M", "--allocated", "50", "--backing", "memfd", "--secret", SECRET, "--run-ms", "300");
    }

    /**
     * Asserts that a {@code --json} gmem failed with one error object naming the case, and
     * nothing for a user to puzzle over on stderr. {@return the error message}
     */
    static String assertRefused(GmemIT.Result r, String... contains) {
        assertThat(r.status()).as("refused: %s", r).isNotZero();
        assertThat(r.err()).as("no trace: %s", r).doesNotContain("Exception", "\tat ");
        Object error = GmemIT.json(r.out()).get("error");
        assertThat(error).as("an error object: %s", r).isInstanceOf(String.class);
        if (contains.length > 0) {
            assertThat((String) error).contains(contains);
        }
        assertThat((String) error).doesNotContain("Exception", "java.");
        System.out.println("refused as expected: " + error);
        return (String) error;
    }

    static boolean kvm() {
        return Kvm.available();
    }

    // ------------------------------------------------------------------ the cases

    @Test
    @Order(1)
    void theGuestCrossesTheRelayAndTheRelayLearnsNothing() throws Exception {
        int port = nextPort++;
        Path recorded = dir.resolve("session");
        Started d = destination(port, "destination", "source");
        Started r = startRelay(port, port, "--record", recorded.toString());
        GmemIT.Result sent = sourceTo(middleToSource, port, "source", "destination").await();
        GmemIT.Result received = d.await();
        assertThat(sent.status()).as(sent.err()).isZero();
        assertThat(received.status()).as(received.err()).isZero();
        assertThat(r.process().waitFor(60, TimeUnit.SECONDS)).isTrue();
        Map<String, Object> from = GmemIT.json(sent.out());
        Map<String, Object> to = GmemIT.json(received.out());
        if (kvm()) {
            assertThat(to.get("firstTick")).as("the guest carried on at the destination").isEqualTo((Long) from.get("lastTickAtSource") + 1);
        } else {
            assertThat(from.get("guestContinued")).as("the destination checked every page").isEqualTo(true);
            assertThat(from.get("path")).isEqualTo("memory-only");
            assertThat(to.get("checkPassed")).isEqualTo(true);
            assertThat(to.get("owner")).isEqualTo(from.get("owner"));
            assertThat(to.get("peer")).asString().contains("CN=source");
        }
        byte[] there = Files.readAllBytes(recorded);
        byte[] back = Files.readAllBytes(recorded.resolveSibling("session.back"));
        assertThat((long) there.length).as("the payload went through the relay").isGreaterThan(4L << 20);
        byte[] secret = SECRET.getBytes(StandardCharsets.US_ASCII);
        assertThat(indexOf(there, secret)).as("the private pages' secret in what the relay saw").isNegative();
        assertThat(indexOf(back, secret)).isNegative();
        assertThat(indexOf(there, "TOP-SECRET".getBytes(StandardCharsets.US_ASCII))).isNegative();
        Files.copy(recorded, dir.resolve("replay-me"));
    }

    @Test
    @Order(2)
    void anAlteredByteEndsTheMigrationOnBothSidesAndTheDestinationKeepsNothing() throws Exception {
        int port = nextPort++;
        Started d = destination(port, "destination", "source");
        Started r = startRelay(port, port, "--flip", Integer.toString(3 << 20));
        GmemIT.Result sent = sourceTo(middleToSource, port, "source", "destination").await();
        GmemIT.Result received = d.await();
        assertThat(received.status()).as("the destination refused: %s", received.err()).isNotZero();
        assertThat(received.out()).as("the destination reports no guest").doesNotContain("firstTick", "digest");
        assertRefused(received, "did not authenticate", "altered");
        assertThat(sent.status()).as("the source learned the migration failed: %s", sent.out()).isNotZero();
        assertRefused(sent);
        assertThat(r.process().waitFor(60, TimeUnit.SECONDS)).isTrue();
    }

    @Test
    @Order(3)
    void aRecordedSessionReplayedToTheDestinationIsRefused() throws Exception {
        Path recorded = dir.resolve("replay-me");
        assumeTrue(Files.exists(recorded), "the pass-through case recorded no session");
        int port = nextPort++;
        Started d = destination(port, "destination", "source");
        Started r = relay("--replay", recorded.toString(), "--to", destinationAddress + ":" + port, "--timeout-ms", "60000");
        GmemIT.Result received = d.await();
        GmemIT.Result replayed = r.await();
        assertThat(replayed.status()).as(replayed.err()).isZero();
        assertThat(replayed.out()).startsWith("replayed ");
        assertThat(received.out()).doesNotContain("firstTick", "digest");
        assertRefused(received, "did not authenticate", "replayed");
    }

    @Test
    @Order(4)
    void theMiddleAnsweringWithItsOwnIdentityIsRefusedByBothEnds() throws Exception {
        int port = nextPort++;
        // The middle terminates the source's connection as if it were the destination.
        Started impostor = gmem(middle, "migrate", "--listen", middleToSource + ":" + port, "--json", "--timeout", "60",
                "--identity", keys.resolve("stranger.p12").toString(), "--peer", keys.resolve("source.crt").toString());
        assertThat(impostor.lines().readLine()).startsWith("listening on " + middleToSource);
        GmemIT.Result sent = sourceTo(middleToSource, port, "source", "destination").await();
        assertRefused(sent, "wrong peer", "CN=stranger", "not the trusted peer", "CN=destination");
        GmemIT.Result fooled = impostor.await();
        assertThat(fooled.status()).isNotZero();
        assertThat(fooled.out()).doesNotContain("firstTick", "digest");

        // And it connects to the destination as if it were the source.
        int port2 = nextPort++;
        Started d = destination(port2, "destination", "source");
        Started posing = gmem(middle, "migrate", "--connect", destinationAddress + ":" + port2, "--json", "--timeout", "60",
                "--identity", keys.resolve("stranger.p12").toString(), "--peer", keys.resolve("destination.crt").toString(),
                "--memory", "16M", "--allocated", "10", "--backing", "memfd");
        GmemIT.Result refused = d.await();
        assertRefused(refused, "wrong peer", "CN=stranger", "not the trusted peer", "CN=source");
        assertThat(refused.out()).doesNotContain("firstTick", "digest");
        GmemIT.Result poser = posing.await();
        assertRefused(poser, "wrong peer");
    }

    @Test
    @Order(5)
    void theEndsCannotReachEachOtherButThroughTheMiddle() throws Exception {
        int port = nextPort++;
        Started d = destination(port, "destination", "source");
        // Straight to the destination's address from the source's namespace: no route, as forwarding is off anyway.
        GmemIT.Result sent = sourceTo(destinationAddress, port, "source", "destination").await();
        assertRefused(sent, "migration channel to");
        d.process().destroyForcibly();
        d.process().waitFor(30, TimeUnit.SECONDS);
    }

    static int indexOf(byte[] haystack, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= haystack.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (haystack[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }
}
