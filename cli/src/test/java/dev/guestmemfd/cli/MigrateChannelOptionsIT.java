package dev.guestmemfd.cli;

import static dev.guestmemfd.cli.GmemIT.assertOneLineError;
import static dev.guestmemfd.cli.GmemIT.gmem;
import static dev.guestmemfd.cli.GmemIT.withoutKvm;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The options of {@code gmem migrate} for the authenticated channel, as a user meets them:
 * each mistake refused with one line naming the option, on any host, before anything is
 * listened on or sent.
 */
@Timeout(300)
class MigrateChannelOptionsIT {
    @TempDir
    static Path keys;

    @BeforeAll
    static void makeTheExampleSet() throws Exception {
        GmemIT.Result made = gmem(null, "migrate", "keys", "--out", keys.toString());
        assertThat(made.status()).as(made.err()).isZero();
        assertThat(made.out()).contains("destination: gmem migrate --listen ADDR:PORT", "source:      gmem migrate --connect ADDR:PORT");
    }

    String key(String name) {
        return keys.resolve(name + ".p12").toString();
    }

    String cert(String name) {
        return keys.resolve(name + ".crt").toString();
    }

    @Test
    void theExampleSetIsMadeOnceAndPrivate() throws Exception {
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(keys.resolve("source.p12")))).isEqualTo("rw-------");
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(keys.resolve("source.password")))).isEqualTo("rw-------");
        assertOneLineError(withoutKvm(null, "migrate", "keys", "--out", keys.toString()), "exists already");
        assertOneLineError(withoutKvm(null, "migrate", "keys"), "--out");
    }

    @Test
    void eachMistakeIsRefusedWithOneLineNamingIt(@TempDir Path dir) throws Exception {
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "127.0.0.1:7000"), "--connect needs --identity");
        assertOneLineError(withoutKvm(null, "migrate", "--listen", "0.0.0.0:7000"), "--listen 0.0.0.0:7000", "needs --identity");
        assertOneLineError(withoutKvm(null, "migrate", "--listen", "127.0.0.1:7000", "--identity", key("destination")), "--identity needs --peer");
        assertOneLineError(withoutKvm(null, "migrate", "--listen", "127.0.0.1:7000", "--peer", cert("source")), "--peer needs --identity");
        assertOneLineError(withoutKvm(null, "migrate", "--listen", "127.0.0.1:70000", "--identity", key("destination"), "--peer", cert("source")),
                "--listen 127.0.0.1:70000", "0 to 65535");
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "127.0.0.1:0", "--identity", key("source"), "--peer", cert("destination")),
                "--connect 127.0.0.1:0", "1 to 65535");
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "7000", "--identity", key("source"), "--peer", cert("destination")),
                "--connect 7000", "ADDR:PORT");
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "127.0.0.1:7000", "--identity", key("source"), "--peer", cert("destination"),
                "--timeout", "0"), "--timeout 0");
        assertOneLineError(withoutKvm(null, "migrate", "--to", "127.0.0.1:7000", "--identity", key("source"), "--peer", cert("destination")),
                "--identity and --peer go with --listen or --connect");
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "127.0.0.1:7000", "--listen", "7001"), "exclude each other");

        Path open = Files.copy(keys.resolve("source.p12"), dir.resolve("open.p12"));
        Files.copy(keys.resolve("source.password"), dir.resolve("open.password"));
        Files.setPosixFilePermissions(open, PosixFilePermissions.fromString("rw-r--r--"));
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "127.0.0.1:7000", "--identity", open.toString(), "--peer", cert("destination")),
                "--identity", "open.p12", "0600", "chmod 600");
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "127.0.0.1:7000", "--identity", dir.resolve("none.p12").toString(),
                "--peer", cert("destination")), "--identity", "none.p12");
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "127.0.0.1:7000", "--identity", key("source"),
                "--peer", key("destination")), "--peer", "destination.p12");
    }

    @Test
    void nobodyListeningIsToldAsSuch() throws Exception {
        int port;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        assertOneLineError(withoutKvm(null, "migrate", "--connect", "127.0.0.1:" + port, "--identity", key("source"), "--peer", cert("destination")),
                "migration channel to", "connection failed");
    }
}
