package dev.guestmemfd.migration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The authenticated channel against wrong peers, garbage, silence and closes mid-handshake,
 * and identity files with wrong modes and passwords. Every call is bounded: a hang is a failure.
 */
@Timeout(value = 90, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class Attack2ChannelTest {
    /** A thread per task: the common pool has one worker on two cores, and these tasks block. */
    static final java.util.concurrent.Executor THREADS = r -> Thread.ofPlatform().daemon().name("attack2").start(r);

    static final Duration SHORT = Duration.ofSeconds(2);
    static final InetSocketAddress LOOPBACK = new InetSocketAddress(InetAddress.getLoopbackAddress(), 0);

    @TempDir
    static Path dir;
    static Identity source;
    static Identity destination;
    static Identity stranger;

    @BeforeAll
    static void identities() throws IOException {
        ExampleIdentities.create(dir);
        source = Identity.load(dir.resolve("source.p12"));
        destination = Identity.load(dir.resolve("destination.p12"));
        stranger = Identity.load(dir.resolve("stranger.p12"));
    }

    static TrustedPeer peer(Identity i) {
        return TrustedPeer.of(i.certificate());
    }

    static ChannelException.Reason reason(Throwable t) {
        Throwable c = t instanceof ExecutionException ? t.getCause() : t;
        assertThat(c).as("a ChannelException").isInstanceOf(ChannelException.class);
        return ((ChannelException) c).reason();
    }

    static <T> Throwable bounded(CompletableFuture<T> f) {
        Throwable t = catchThrowable(() -> f.get(30, TimeUnit.SECONDS));
        if (t != null) {
            assertThat(t).as("bounded: no answer within 30 s").isNotInstanceOf(java.util.concurrent.TimeoutException.class);
        }
        return t;
    }

    @Test
    void theRightPeersConnectAndShareOneSealingKey() throws Exception {
        try (MigrationListener l = MigrationListener.bind(LOOPBACK, destination, peer(source))) {
            CompletableFuture<MigrationChannel> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return l.accept(Duration.ofSeconds(20));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, THREADS);
            try (MigrationChannel c = MigrationChannel.connect(l.address(), source, peer(destination), Duration.ofSeconds(20));
                    MigrationChannel d = accepted.get(30, TimeUnit.SECONDS)) {
                assertThat(c.sealingKey().getEncoded()).isEqualTo(d.sealingKey().getEncoded());
                c.out().write(7);
                c.out().flush();
                assertThat(d.in().read()).isEqualTo(7);
            }
        }
    }

    @Test
    void aStrangerIsRefusedAtBothEnds() throws Exception {
        try (MigrationListener l = MigrationListener.bind(LOOPBACK, destination, peer(source))) {
            CompletableFuture<MigrationChannel> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return l.accept(Duration.ofSeconds(20));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, THREADS);
            Throwable client = catchThrowable(() -> MigrationChannel.connect(l.address(), stranger, peer(destination), Duration.ofSeconds(20)));
            assertThat(reason(client)).isEqualTo(ChannelException.Reason.WRONG_PEER);
            Throwable server = bounded(accepted);
            assertThat(server).isNotNull();
            assertThat(reason(server.getCause().getCause())).isEqualTo(ChannelException.Reason.WRONG_PEER);
        }
    }

    @Test
    void aSourceThatTrustsAnotherDestinationRefusesIt() throws Exception {
        try (MigrationListener l = MigrationListener.bind(LOOPBACK, destination, peer(source))) {
            CompletableFuture<MigrationChannel> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return l.accept(Duration.ofSeconds(20));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, THREADS);
            Throwable client = catchThrowable(() -> MigrationChannel.connect(l.address(), source, peer(stranger), Duration.ofSeconds(20)));
            assertThat(reason(client)).isEqualTo(ChannelException.Reason.WRONG_PEER);
            Throwable server = bounded(accepted);
            assertThat(server).as("the listener must not hand out a channel the source refused").isNotNull();
        }
    }

    /** A plain TCP client that sends garbage, one that says nothing, one that closes at once. */
    @Test
    @SuppressWarnings("try") // closed early on purpose: a hangup
    void garbageSilenceAndHangupsAtTheListenerEndEachAcceptInItsTimeout() throws Exception {
        try (MigrationListener l = MigrationListener.bind(LOOPBACK, destination, peer(source))) {
            for (String what : new String[] {"garbage", "silence", "hangup", "half a hello"}) {
                CompletableFuture<MigrationChannel> accepted = CompletableFuture.supplyAsync(() -> {
                    try {
                        return l.accept(SHORT);
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }, THREADS);
                try (Socket s = new Socket(l.address().getAddress(), l.address().getPort())) {
                    OutputStream out = s.getOutputStream();
                    switch (what) {
                        case "garbage" -> out.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(50).getBytes(java.nio.charset.StandardCharsets.US_ASCII));
                        case "hangup" -> s.close();
                        case "half a hello" -> out.write(new byte[] {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, (byte) 0xfc, 0x03, 0x03});
                        default -> {
                        }
                    }
                    Throwable t = bounded(accepted);
                    assertThat(t).as(what).isNotNull();
                    ChannelException.Reason r = reason(t.getCause().getCause());
                    if (what.equals("silence") || what.equals("half a hello")) {
                        assertThat(r).as(what).isEqualTo(ChannelException.Reason.TIMEOUT);
                    } else {
                        assertThat(r).as(what).isIn(ChannelException.Reason.BROKEN, ChannelException.Reason.DOWNGRADE,
                                ChannelException.Reason.TAMPERED);
                    }
                }
            }
            // the listener stays open: the right peer still gets in
            CompletableFuture<MigrationChannel> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return l.accept(Duration.ofSeconds(20));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, THREADS);
            try (MigrationChannel c = MigrationChannel.connect(l.address(), source, peer(destination), Duration.ofSeconds(20));
                    MigrationChannel d = accepted.get(30, TimeUnit.SECONDS)) {
                assertThat(d.peerName()).isNotBlank();
                assertThat(c.peer()).isEqualTo(destination.certificate());
            }
        }
    }

    /** A server that is no migration listener: it answers garbage, says nothing, or hangs up. */
    @Test
    void connectToGarbageSilenceAndHangupsEndsInItsTimeout() throws Exception {
        for (String what : new String[] {"garbage", "silence", "hangup"}) {
            try (ServerSocket server = new ServerSocket(0, 5, InetAddress.getLoopbackAddress())) {
                CompletableFuture<Void> serve = CompletableFuture.runAsync(() -> {
                    try (Socket s = server.accept()) {
                        switch (what) {
                            case "garbage" -> {
                                s.getOutputStream().write("HTTP/1.1 400 Bad Request\r\n\r\n".repeat(20).getBytes(java.nio.charset.StandardCharsets.US_ASCII));
                                s.getOutputStream().flush();
                                Thread.sleep(3000);
                            }
                            case "silence" -> Thread.sleep(5000);
                            default -> {
                            }
                        }
                    } catch (IOException | InterruptedException e) {
                        // the end of the conversation
                    }
                }, THREADS);
                CompletableFuture<MigrationChannel> c = CompletableFuture.supplyAsync(() -> {
                    try {
                        return MigrationChannel.connect((InetSocketAddress) server.getLocalSocketAddress(), source, peer(destination), SHORT);
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }, THREADS);
                Throwable t = bounded(c);
                assertThat(t).as(what).isNotNull();
                ChannelException.Reason r = reason(t.getCause().getCause());
                if (what.equals("silence")) {
                    assertThat(r).as(what).isEqualTo(ChannelException.Reason.TIMEOUT);
                } else {
                    assertThat(r).as(what).isIn(ChannelException.Reason.BROKEN, ChannelException.Reason.DOWNGRADE,
                            ChannelException.Reason.TAMPERED);
                }
                serve.get(30, TimeUnit.SECONDS);
            }
        }
        // nobody listens
        int port;
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        Throwable t = catchThrowable(() -> MigrationChannel.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), source,
                peer(destination), SHORT));
        assertThat(reason(t)).isEqualTo(ChannelException.Reason.BROKEN);
    }

    @Test
    @SuppressWarnings("try") // closed early on purpose: a hangup
    void aPeerThatFallsSilentOrHangsUpAfterTheHandshakeEndsTheRead() throws Exception {
        try (MigrationListener l = MigrationListener.bind(LOOPBACK, destination, peer(source))) {
            CompletableFuture<MigrationChannel> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return l.accept(Duration.ofSeconds(20));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, THREADS);
            try (MigrationChannel c = MigrationChannel.connect(l.address(), source, peer(destination), SHORT);
                    MigrationChannel d = accepted.get(30, TimeUnit.SECONDS)) {
                InputStream in = c.in();
                CompletableFuture<Integer> read = CompletableFuture.supplyAsync(() -> {
                    try {
                        return in.read();
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }, THREADS);
                Throwable t = bounded(read);
                assertThat(t).as("a read of a silent peer").isNotNull();
                assertThat(reason(t.getCause().getCause())).isEqualTo(ChannelException.Reason.TIMEOUT);
                // the destination hangs up: the source's read ends, by an end of stream or a BROKEN channel
                d.close();
                CompletableFuture<Integer> after = CompletableFuture.supplyAsync(() -> {
                    try {
                        return c.in().read();
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }, THREADS);
                Throwable t2 = bounded(after);
                if (t2 == null) {
                    assertThat(after.get()).isEqualTo(-1);
                } else {
                    assertThat(t2.getCause().getCause()).isInstanceOf(IOException.class);
                }
            }
        }
    }

    @Test
    void closingTheListenerWakesAnAccept() throws Exception {
        MigrationListener l = MigrationListener.bind(LOOPBACK, destination, peer(source));
        CompletableFuture<MigrationChannel> accepted = CompletableFuture.supplyAsync(() -> {
            try {
                return l.accept(Duration.ofSeconds(60));
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }, THREADS);
        Thread.sleep(200);
        l.close();
        l.close();
        Throwable t = bounded(accepted);
        assertThat(t).isNotNull();
        assertThat(t.getCause().getCause()).isInstanceOf(ChannelException.class);
    }

    @Test
    void timeoutsOutsideTheirRangeAreRefused() throws Exception {
        try (MigrationListener l = MigrationListener.bind(LOOPBACK, destination, peer(source))) {
            for (Duration d : new Duration[] {Duration.ZERO, Duration.ofMillis(-1), Duration.ofMillis(Integer.MAX_VALUE + 1L),
                Duration.ofSeconds(Long.MAX_VALUE)}) {
                assertThatThrownBy(() -> l.accept(d)).as(d.toString()).isInstanceOf(IllegalArgumentException.class);
                assertThatThrownBy(() -> MigrationChannel.connect(l.address(), source, peer(destination), d)).as(d.toString())
                        .isInstanceOf(IllegalArgumentException.class);
            }
            // positive but under a millisecond: still a bound, never "wait for ever" (a socket timeout of 0)
            CompletableFuture<MigrationChannel> tiny = CompletableFuture.supplyAsync(() -> {
                try {
                    return l.accept(Duration.ofNanos(1));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, THREADS);
            Throwable t = bounded(tiny);
            assertThat(t).isNotNull();
            assertThat(reason(t.getCause().getCause())).isEqualTo(ChannelException.Reason.TIMEOUT);
        }
    }

    @Test
    void identityFilesWithWrongModesPasswordsOrContentsAreRefused() throws IOException {
        Path ks = dir.resolve("source.p12");
        Path pw = dir.resolve("source.password");
        Path d = Files.createTempDirectory(dir, "id");
        Path ks2 = d.resolve("x.p12");
        Path pw2 = d.resolve("x.password");
        Files.copy(ks, ks2);
        Files.copy(pw, pw2);
        Files.setPosixFilePermissions(ks2, PosixFilePermissions.fromString("rw-------"));
        Files.setPosixFilePermissions(pw2, PosixFilePermissions.fromString("rw-------"));
        assertThat(Identity.load(ks2).certificate()).isEqualTo(source.certificate());
        for (String mode : new String[] {"rw-r-----", "rw----r--", "rw-rw-rw-", "rw----rw-"}) {
            Files.setPosixFilePermissions(pw2, PosixFilePermissions.fromString(mode));
            assertThatThrownBy(() -> Identity.load(ks2)).as("password file " + mode).isInstanceOf(IOException.class);
            Files.setPosixFilePermissions(pw2, PosixFilePermissions.fromString("rw-------"));
            Files.setPosixFilePermissions(ks2, PosixFilePermissions.fromString(mode));
            assertThatThrownBy(() -> Identity.load(ks2)).as("keystore " + mode).isInstanceOf(IOException.class);
            Files.setPosixFilePermissions(ks2, PosixFilePermissions.fromString("rw-------"));
        }
        Files.writeString(pw2, "not the password\n");
        assertThatThrownBy(() -> Identity.load(ks2)).as("wrong password").isInstanceOf(IOException.class);
        Files.writeString(pw2, "");
        assertThatThrownBy(() -> Identity.load(ks2)).as("empty password").isInstanceOf(IOException.class);
        Files.copy(pw, pw2, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Files.setPosixFilePermissions(pw2, PosixFilePermissions.fromString("rw-------"));
        byte[] bytes = Files.readAllBytes(ks2);
        Files.write(ks2, java.util.Arrays.copyOf(bytes, bytes.length / 2));
        assertThatThrownBy(() -> Identity.load(ks2)).as("a cut keystore").isInstanceOf(IOException.class);
        Files.write(ks2, new byte[0]);
        assertThatThrownBy(() -> Identity.load(ks2)).as("an empty keystore").isInstanceOf(IOException.class);
        Files.delete(ks2);
        assertThatThrownBy(() -> Identity.load(ks2)).as("no keystore").isInstanceOf(IOException.class);
        assertThatThrownBy(() -> Identity.load(ks, d.resolve("missing.password"))).as("no password file").isInstanceOf(IOException.class);
        // a certificate file is not an identity; a keystore is not a peer
        assertThatThrownBy(() -> Identity.load(dir.resolve("source.crt"), pw)).isInstanceOf(IOException.class);
        assertThatThrownBy(() -> TrustedPeer.load(ks)).isInstanceOf(IOException.class);
        Path two = d.resolve("two.crt");
        Files.writeString(two, Files.readString(dir.resolve("source.crt")) + Files.readString(dir.resolve("stranger.crt")));
        assertThatThrownBy(() -> TrustedPeer.load(two)).as("two certificates").isInstanceOf(IOException.class);
        Path none = d.resolve("none.crt");
        Files.writeString(none, "");
        assertThatThrownBy(() -> TrustedPeer.load(none)).as("no certificate").isInstanceOf(IOException.class);
        assertThat(TrustedPeer.load(dir.resolve("source.crt")).certificate()).isEqualTo(source.certificate());
    }

    /**
     * The source closes its channel while the destination keeps its end open (stalled, or busy
     * restoring). close() must let go: here it waits for the peer's own close, up to the whole
     * read timeout (60 s here; 20 s in the test above, which takes 20 s for it). The bound
     * checked is 10 s.
     */
    @Test
    void closingAChannelDoesNotWaitForThePeerToClose() throws Exception {
        try (MigrationListener l = MigrationListener.bind(LOOPBACK, destination, peer(source))) {
            CompletableFuture<MigrationChannel> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return l.accept(Duration.ofSeconds(60));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, THREADS);
            MigrationChannel c = MigrationChannel.connect(l.address(), source, peer(destination), Duration.ofSeconds(60));
            try (MigrationChannel d = accepted.get(30, TimeUnit.SECONDS)) {
                c.out().write(1);
                c.out().flush();
                assertThat(d.in().read()).isEqualTo(1);
                CompletableFuture<Void> close = CompletableFuture.runAsync(() -> {
                    try {
                        c.close();
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }, THREADS);
                Throwable t = catchThrowable(() -> close.get(10, TimeUnit.SECONDS));
                assertThat(t).as("close of a channel whose peer keeps its end open").isNull();
            }
        }
    }
}
