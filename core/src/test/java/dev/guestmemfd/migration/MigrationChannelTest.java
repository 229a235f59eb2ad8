package dev.guestmemfd.migration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Owner;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.testing.Relay;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManager;
import javax.net.ssl.X509TrustManager;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The migration channel against each case of its threat model, over loopback: the right
 * peers, a wrong peer either way, a downgrade, a replayed session, an altered byte and a
 * silent peer. Where a guest memory file crosses, the source's must be unchanged and the
 * destination's must hold nothing after a failure.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class MigrationChannelTest extends LoopbackPeers {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long SIZE = 64 * PAGE;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
    static final Duration TIMEOUT = Duration.ofSeconds(20);
    static final byte[] SECRET = "private page secret: do not leak 7f3a".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    static final byte[] SHARED = "shared page, host-visible b61c".getBytes(java.nio.charset.StandardCharsets.US_ASCII);

    // ------------------------------------------------------------------ the right peers

    @Test
    void bothEndsProveWhoTheyAreAndDeriveTheSameSessionBoundKey() throws Exception {
        byte[][] keysSeen = new byte[2][];
        for (int session = 0; session < 2; session++) {
            try (MigrationListener listener = destinationListener()) {
                Future<MigrationChannel> accepted = pool.submit(() -> listener.accept(TIMEOUT));
                try (MigrationChannel src = MigrationChannel.connect(listener.address(), source, destinationPeer, TIMEOUT);
                     MigrationChannel dst = accepted.get(30, TimeUnit.SECONDS)) {
                    assertThat(src.peer()).isEqualTo(destination.certificate());
                    assertThat(dst.peer()).isEqualTo(source.certificate());
                    assertThat(src.peerName()).contains("CN=destination");
                    assertThat(dst.peerName()).contains("CN=source");
                    assertThat(src.sealingKey().getEncoded()).hasSize(32).isEqualTo(dst.sealingKey().getEncoded());
                    assertThat(src.sealingKey().getAlgorithm()).isEqualTo("AES");
                    src.out().write("hello".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
                    src.out().flush();
                    assertThat(dst.in().readNBytes(5)).asString().isEqualTo("hello");
                    dst.out().write(42);
                    dst.out().flush();
                    assertThat(src.in().read()).isEqualTo(42);
                    keysSeen[session] = src.sealingKey().getEncoded();
                }
            }
        }
        assertThat(keysSeen[0]).as("each session has a key of its own").isNotEqualTo(keysSeen[1]);
    }

    @Test
    void aGuestMemoryFileCrossesSealedAndTheRelayLearnsNothing(@TempDir Path dir) throws Exception {
        Path recorded = dir.resolve("session");
        try (GuestMemory from = sourceMemory(); GuestMemory to = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
             MigrationListener listener = destinationListener();
             Relay relay = Relay.onLoopback(listener.address().getPort(), recorded, -1)) {
            Binding target = to.bind(new Owner() { }, 0, SIZE);
            Future<Void> received = pool.submit(() -> receive(listener, target));
            try (MigrationChannel src = MigrationChannel.connect(relay.address(), source, destinationPeer, TIMEOUT)) {
                Snapshot.write(bindingOf(from), src.sealingKey(), src.out());
                src.out().flush();
                assertThat(src.in().read()).as("the destination's acknowledgement").isEqualTo(1);
            }
            received.get(30, TimeUnit.SECONDS);
            relay.join(10_000);
            assertThat(digest(to, target)).isEqualTo(digest(from, bindingOf(from)));
            assertThat(to.pageCounts()).isEqualTo(from.pageCounts());
        }
        byte[] there = Files.readAllBytes(recorded);
        byte[] back = Files.readAllBytes(recorded.resolveSibling("session.back"));
        assertThat(there.length).as("the relay saw the whole stream").isGreaterThan((int) (4 * PAGE));
        for (byte[] seen : new byte[][] {there, back}) {
            assertThat(indexOf(seen, SECRET)).as("the private pages' secret in what the relay saw").isNegative();
            assertThat(indexOf(seen, SHARED)).as("even shared pages cross encrypted").isNegative();
        }
    }

    /** The destination's side: restore what arrives, then acknowledge with one byte. */
    private static Void receive(MigrationListener listener, Binding target) throws IOException {
        try (MigrationChannel dst = listener.accept(TIMEOUT)) {
            Snapshot.reader(dst.sealingKey(), dst.in(), new Snapshot.ReplayGuard(), Snapshot.Framing.EMBEDDED)
                    .restore(java.util.List.of(target), state -> {
                        throw new IllegalStateException("no owner state expected");
                    });
            dst.out().write(1);
            dst.out().flush();
        }
        return null;
    }

    // ------------------------------------------------------------------ wrong peer

    @Test
    void aStrangerIsRefusedByTheListenerAndLearnsItWasRefused() throws Exception {
        try (MigrationListener listener = destinationListener()) {
            Future<MigrationChannel> accepted = pool.submit(() -> listener.accept(TIMEOUT));
            Throwable connecting = catchThrowable(() -> MigrationChannel.connect(listener.address(), stranger, destinationPeer, TIMEOUT).close());
            assertReason(accepted, ChannelException.Reason.WRONG_PEER, "CN=stranger", "not the trusted peer", "CN=source");
            assertThat(connecting).isInstanceOf(ChannelException.class);
            assertThat(((ChannelException) connecting).reason()).as(connecting.getMessage()).isEqualTo(ChannelException.Reason.WRONG_PEER);
        }
    }

    @Test
    void aSourceRefusesADestinationThatIsNotItsPeer() throws Exception {
        try (MigrationListener impostor = MigrationListener.bind(new InetSocketAddress(LO, 0), stranger, sourcePeer)) {
            Future<MigrationChannel> accepted = pool.submit(() -> impostor.accept(TIMEOUT));
            assertThatThrownBy(() -> MigrationChannel.connect(impostor.address(), source, destinationPeer, TIMEOUT))
                    .isInstanceOfSatisfying(ChannelException.class, e -> assertThat(e.reason()).isEqualTo(ChannelException.Reason.WRONG_PEER))
                    .hasMessageContaining("CN=stranger").hasMessageContaining("not the trusted peer").hasMessageContaining("CN=destination");
            assertReason(accepted, ChannelException.Reason.WRONG_PEER);
        }
    }

    @Test
    void aWrongPeerLearnsNoGuest() throws Exception {
        // The destination trusts the source; a stranger holding the source's certificate (but not its key) cannot pass.
        Identity forged = Identity.of(stranger.key(), source.certificate());
        try (MigrationListener listener = destinationListener()) {
            Future<MigrationChannel> accepted = pool.submit(() -> listener.accept(TIMEOUT));
            Throwable connecting = catchThrowable(() -> MigrationChannel.connect(listener.address(), forged, destinationPeer, TIMEOUT).close());
            assertThat(connecting).isInstanceOf(ChannelException.class);
            Throwable refused = catchThrowable(() -> accepted.get(30, TimeUnit.SECONDS));
            assertThat(refused).hasCauseInstanceOf(ChannelException.class);
        }
    }

    // ------------------------------------------------------------------ downgrade

    @Test
    void aTls12ClientHelloIsRefusedAsADowngrade() throws Exception {
        try (MigrationListener listener = destinationListener()) {
            Future<MigrationChannel> accepted = pool.submit(() -> listener.accept(TIMEOUT));
            SSLContext old = SSLContext.getInstance("TLSv1.2");
            old.init(keyManagers(keys.resolve("source.p12")).getKeyManagers(), new TrustManager[] {new TrustAll()}, null);
            Throwable client;
            try (SSLSocket s = (SSLSocket) old.getSocketFactory().createSocket(LO, listener.address().getPort())) {
                s.setSoTimeout(10_000);
                s.setEnabledProtocols(new String[] {"TLSv1.2"});
                client = catchThrowable(() -> {
                    s.startHandshake();
                    s.getOutputStream().write(0x4d);
                    s.getOutputStream().flush();
                    if (s.getInputStream().read() < 0) {
                        throw new IOException("closed");
                    }
                });
            }
            assertReason(accepted, ChannelException.Reason.DOWNGRADE, "TLS 1.3");
            // Refused by the protocol version itself, in the handshake: not by a later layer.
            assertThat(client).as("the old client gets no session").isNotNull().hasMessageContaining("protocol_version");
        }
    }

    @Test
    void aSourceRefusesADestinationThatOffersOnlyTls12() throws Exception {
        SSLContext old = SSLContext.getInstance("TLSv1.2");
        old.init(keyManagers(keys.resolve("destination.p12")).getKeyManagers(), new TrustManager[] {new TrustAll()}, null);
        try (ServerSocket plain = new ServerSocket(0, 1, LO)) {
            Future<?> server = pool.submit(() -> {
                try (Socket a = plain.accept(); SSLSocket s = (SSLSocket) old.getSocketFactory().createSocket(a, null, true)) {
                    s.setUseClientMode(false);
                    s.setEnabledProtocols(new String[] {"TLSv1.2"});
                    s.setSoTimeout(10_000);
                    s.startHandshake();
                } catch (IOException e) {
                    // Refused, as expected.
                }
                return null;
            });
            assertThatThrownBy(() -> MigrationChannel.connect(new InetSocketAddress(LO, plain.getLocalPort()), source, destinationPeer, TIMEOUT))
                    .isInstanceOfSatisfying(ChannelException.class, e -> assertThat(e.reason()).isEqualTo(ChannelException.Reason.DOWNGRADE));
            server.get(30, TimeUnit.SECONDS);
        }
    }

    // ------------------------------------------------------------------ replay

    @Test
    void aRecordedSessionReplayedToTheDestinationIsRefused(@TempDir Path dir) throws Exception {
        Path recorded = dir.resolve("session");
        try (GuestMemory from = sourceMemory(); GuestMemory to = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
             MigrationListener listener = destinationListener();
             Relay relay = Relay.onLoopback(listener.address().getPort(), recorded, -1)) {
            Binding target = to.bind(new Owner() { }, 0, SIZE);
            Future<Void> received = pool.submit(() -> receive(listener, target));
            try (MigrationChannel src = MigrationChannel.connect(relay.address(), source, destinationPeer, TIMEOUT)) {
                Snapshot.write(bindingOf(from), src.sealingKey(), src.out());
                src.out().flush();
                assertThat(src.in().read()).isEqualTo(1);
            }
            received.get(30, TimeUnit.SECONDS);
            relay.join(10_000);
        }
        byte[] session = Files.readAllBytes(recorded);
        try (GuestMemory again = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
             MigrationListener listener = destinationListener()) {
            Binding target = again.bind(new Owner() { }, 0, SIZE);
            Future<Void> received = pool.submit(() -> receive(listener, target));
            Relay.replay(session, listener.address(), 10_000);
            assertReason(received, ChannelException.Reason.TAMPERED, "replayed");
            assertThat(again.pageCounts().allocated()).as("the destination holds nothing").isZero();
        }
    }

    // ------------------------------------------------------------------ altered byte

    @Test
    void anAlteredByteEndsTheMigrationTheSourceKeepsItsMemoryTheDestinationHoldsNothing() throws Exception {
        for (long flip : new long[] {5, 40 * 1024}) {  // in the ClientHello, and in the guest's pages
            try (GuestMemory from = sourceMemory(); GuestMemory to = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
                 MigrationListener listener = destinationListener();
                 Relay relay = Relay.onLoopback(listener.address().getPort(), null, flip)) {
                byte[] before = digest(from, bindingOf(from));
                var countsBefore = from.pageCounts();
                Binding target = to.bind(new Owner() { }, 0, SIZE);
                Future<Void> received = pool.submit(() -> receive(listener, target));
                Throwable sending = catchThrowable(() -> {
                    try (MigrationChannel src = MigrationChannel.connect(relay.address(), source, destinationPeer, TIMEOUT)) {
                        Snapshot.write(bindingOf(from), src.sealingKey(), src.out());
                        src.out().flush();
                        if (src.in().read() != 1) {
                            throw new IOException("no acknowledgement");
                        }
                    }
                });
                assertThat(sending).as("byte %d altered: the source learns the migration failed", flip).isInstanceOf(IOException.class);
                Throwable receiving = catchThrowable(() -> received.get(30, TimeUnit.SECONDS));
                assertThat(receiving).as("byte %d altered", flip).isNotNull();
                ChannelException why = causeOf(receiving);
                assertThat(why.reason()).as(why.getMessage()).isIn(ChannelException.Reason.TAMPERED, ChannelException.Reason.DOWNGRADE);
                if (flip > 1024) {
                    assertThat(why.reason()).isEqualTo(ChannelException.Reason.TAMPERED);
                    assertThat(why.getMessage()).contains("altered");
                }
                assertThat(to.pageCounts().allocated()).as("the destination holds nothing").isZero();
                assertThat(digest(to, target)).isEqualTo(digest(zeroes()));
                assertThat(from.pageCounts()).isEqualTo(countsBefore);
                assertThat(digest(from, bindingOf(from))).as("the source's memory is unchanged").isEqualTo(before);
            }
        }
    }

    // ------------------------------------------------------------------ silence and misuse

    @Test
    void aSilentListenerEndsTheConnectInTheTimeout() throws Exception {
        try (ServerSocket silent = new ServerSocket(0, 1, LO)) {
            Future<Socket> held = pool.submit(silent::accept);
            assertThatThrownBy(() -> MigrationChannel.connect(new InetSocketAddress(LO, silent.getLocalPort()), source, destinationPeer,
                    Duration.ofMillis(300)))
                    .isInstanceOfSatisfying(ChannelException.class, e -> assertThat(e.reason()).isEqualTo(ChannelException.Reason.TIMEOUT))
                    .hasMessageContaining("said nothing");
            held.get(10, TimeUnit.SECONDS).close();
        }
    }

    @Test
    void aSilentSourceAndAnAbsentOneEndTheAcceptInTheTimeout() throws Exception {
        try (MigrationListener listener = destinationListener()) {
            assertThatThrownBy(() -> listener.accept(Duration.ofMillis(200)))
                    .isInstanceOfSatisfying(ChannelException.class, e -> assertThat(e.reason()).isEqualTo(ChannelException.Reason.TIMEOUT));
            try (Socket silent = new Socket(LO, listener.address().getPort())) {
                assertThatThrownBy(() -> listener.accept(Duration.ofMillis(300)))
                        .isInstanceOfSatisfying(ChannelException.class, e -> assertThat(e.reason()).isEqualTo(ChannelException.Reason.TIMEOUT));
                assertThat(silent.isConnected()).isTrue();
            }
        }
    }

    @Test
    void aSilentPeerAfterTheHandshakeEndsEachReadInTheTimeout() throws Exception {
        try (MigrationListener listener = destinationListener()) {
            Future<MigrationChannel> accepted = pool.submit(() -> listener.accept(Duration.ofMillis(500)));
            try (MigrationChannel src = MigrationChannel.connect(listener.address(), source, destinationPeer, TIMEOUT);
                 MigrationChannel dst = accepted.get(30, TimeUnit.SECONDS)) {
                assertThatThrownBy(() -> dst.in().read())
                        .isInstanceOfSatisfying(ChannelException.class, e -> assertThat(e.reason()).isEqualTo(ChannelException.Reason.TIMEOUT));
                assertThat(src.peer()).isNotNull();
            }
        }
    }

    @Test
    void nobodyListeningIsABrokenChannelAndArgumentsAreChecked() throws Exception {
        int closedPort;
        try (ServerSocket s = new ServerSocket(0, 1, LO)) {
            closedPort = s.getLocalPort();
        }
        assertThatThrownBy(() -> MigrationChannel.connect(new InetSocketAddress(LO, closedPort), source, destinationPeer, TIMEOUT))
                .isInstanceOfSatisfying(ChannelException.class, e -> assertThat(e.reason()).isEqualTo(ChannelException.Reason.BROKEN));
        InetSocketAddress any = new InetSocketAddress(LO, closedPort);
        assertThatThrownBy(() -> MigrationChannel.connect(any, source, destinationPeer, Duration.ZERO)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> MigrationChannel.connect(any, source, destinationPeer, Duration.ofMillis(-1))).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> MigrationChannel.connect(any, source, destinationPeer, Duration.ofDays(30))).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> MigrationChannel.connect(null, source, destinationPeer, TIMEOUT)).isInstanceOf(NullPointerException.class);
        assertThatThrownBy(() -> MigrationChannel.connect(any, null, destinationPeer, TIMEOUT)).isInstanceOf(NullPointerException.class);
        assertThatThrownBy(() -> MigrationChannel.connect(any, source, null, TIMEOUT)).isInstanceOf(NullPointerException.class);
        assertThatThrownBy(() -> MigrationChannel.connect(any, source, destinationPeer, null)).isInstanceOf(NullPointerException.class);
        assertThatThrownBy(() -> MigrationChannel.connect(InetSocketAddress.createUnresolved("no-such-host.invalid", 1), source, destinationPeer, TIMEOUT))
                .isInstanceOfSatisfying(ChannelException.class, e -> assertThat(e.reason()).isEqualTo(ChannelException.Reason.BROKEN));
        MigrationListener closed = destinationListener();
        closed.close();
        closed.close();
        assertThatThrownBy(() -> closed.accept(TIMEOUT)).isInstanceOf(ChannelException.class);
        assertThatThrownBy(() -> Identity.of(source.key())).isInstanceOf(IllegalArgumentException.class);
    }

    // ------------------------------------------------------------------ files

    @Test
    void identityFilesOpenToGroupOrOthersAreRefusedWithTheFixInTheMessage(@TempDir Path dir) throws Exception {
        Path keystore = Files.copy(keys.resolve("source.p12"), dir.resolve("source.p12"));
        Path password = Files.copy(keys.resolve("source.password"), dir.resolve("source.password"));
        Files.setPosixFilePermissions(password, PosixFilePermissions.fromString("rw-------"));
        for (String mode : new String[] {"rw-r--r--", "rw-r-----", "rw----r--", "rw--w----"}) {
            Files.setPosixFilePermissions(keystore, PosixFilePermissions.fromString(mode));
            assertThatThrownBy(() -> Identity.load(keystore)).isInstanceOf(IOException.class)
                    .hasMessageContaining("source.p12").hasMessageContaining(mode).hasMessageContaining("0600").hasMessageContaining("chmod 600");
        }
        Files.setPosixFilePermissions(keystore, PosixFilePermissions.fromString("rw-------"));
        Files.setPosixFilePermissions(password, PosixFilePermissions.fromString("rw-r--r--"));
        assertThatThrownBy(() -> Identity.load(keystore)).isInstanceOf(IOException.class).hasMessageContaining("source.password").hasMessageContaining("0600");
        Files.setPosixFilePermissions(password, PosixFilePermissions.fromString("rw-------"));
        assertThat(Identity.load(keystore).certificate()).isEqualTo(source.certificate());

        Files.writeString(password, "wrong\n");
        assertThatThrownBy(() -> Identity.load(keystore)).isInstanceOf(IOException.class).hasMessageContaining("source.p12");
        assertThatThrownBy(() -> Identity.load(dir.resolve("absent.p12"))).isInstanceOf(IOException.class).hasMessageContaining("no such file");
        Path notAKeystore = Files.writeString(dir.resolve("junk.p12"), "not a keystore");
        Files.setPosixFilePermissions(notAKeystore, PosixFilePermissions.fromString("rw-------"));
        Path junkPassword = Files.writeString(dir.resolve("junk.password"), "x");
        Files.setPosixFilePermissions(junkPassword, PosixFilePermissions.fromString("rw-------"));
        assertThatThrownBy(() -> Identity.load(notAKeystore)).isInstanceOf(IOException.class).hasMessageContaining("junk.p12");
        assertThatThrownBy(() -> Identity.load(null)).isInstanceOf(NullPointerException.class);
    }

    @Test
    void aPeerFileHoldsExactlyOneCertificate(@TempDir Path dir) throws Exception {
        assertThatThrownBy(() -> TrustedPeer.load(dir.resolve("absent.crt"))).isInstanceOf(IOException.class).hasMessageContaining("no such file");
        Path junk = Files.writeString(dir.resolve("junk.crt"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        assertThatThrownBy(() -> TrustedPeer.load(junk)).isInstanceOf(IOException.class).hasMessageContaining("junk.crt");
        Path two = dir.resolve("two.crt");
        Files.write(two, concat(Files.readAllBytes(keys.resolve("source.crt")), Files.readAllBytes(keys.resolve("stranger.crt"))));
        assertThatThrownBy(() -> TrustedPeer.load(two)).isInstanceOf(IOException.class).hasMessageContaining("exactly one");
        Path der = Files.write(dir.resolve("source.der"), source.certificate().getEncoded());
        assertThat(TrustedPeer.load(der).certificate()).isEqualTo(source.certificate());
        assertThat(sourcePeer.toString()).contains("CN=source", "SHA-256");
        assertThat(strangerPeer.fingerprint()).isNotEqualTo(sourcePeer.fingerprint());
    }

    @Test
    void theExampleSetIsPrivateToItsOwnerAndRefusesToOverwrite(@TempDir Path dir) throws Exception {
        Path set = dir.resolve("keys");
        ExampleIdentities.create(set);
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(set))).isEqualTo("rwx------");
        for (String name : ExampleIdentities.NAMES) {
            assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(set.resolve(name + ".p12")))).isEqualTo("rw-------");
            assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(set.resolve(name + ".password")))).isEqualTo("rw-------");
            assertThat(TrustedPeer.load(set.resolve(name + ".crt")).certificate()).isEqualTo(Identity.load(set.resolve(name + ".p12")).certificate());
        }
        byte[] before = Files.readAllBytes(set.resolve("source.p12"));
        assertThatThrownBy(() -> ExampleIdentities.create(set)).isInstanceOf(IOException.class).hasMessageContaining("exists already");
        assertThat(Files.readAllBytes(set.resolve("source.p12"))).isEqualTo(before);
    }

    // ------------------------------------------------------------------ helpers

    /** A file with shared pages of {@link #SHARED}, private pages of {@link #SECRET}, and holes. */
    static GuestMemory sourceMemory() {
        GuestMemory m = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
        Binding owner = m.bind(new Owner() { }, 0, SIZE);
        try (HostMapping host = m.map(0, SIZE)) {
            host.write(2 * PAGE, fill(SHARED, 6 * PAGE));
        }
        m.convert(20 * PAGE, 8 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        owner.pages().asSlice(20 * PAGE, 8 * PAGE).copyFrom(java.lang.foreign.MemorySegment.ofArray(fill(SECRET, 8 * PAGE)));
        BINDINGS.put(m, owner);
        return m;
    }

    static final java.util.Map<GuestMemory, Binding> BINDINGS = java.util.Collections.synchronizedMap(new java.util.IdentityHashMap<>());

    static Binding bindingOf(GuestMemory m) {
        return BINDINGS.get(m);
    }

    static byte[] fill(byte[] pattern, long length) {
        byte[] b = new byte[(int) length];
        for (int i = 0; i < b.length; i++) {
            b[i] = pattern[i % pattern.length];
        }
        return b;
    }

    /** {@return a digest of every page through the owner's view: shared and private bytes alike} */
    static byte[] digest(GuestMemory m, Binding owner) throws Exception {
        return digest(owner.pages().asSlice(0, SIZE).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
    }

    static byte[] zeroes() {
        return new byte[(int) SIZE];
    }

    static byte[] digest(byte[] bytes) throws Exception {
        return MessageDigest.getInstance("SHA-256").digest(bytes);
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

    static byte[] concat(byte[] a, byte[] b) {
        byte[] c = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    static ChannelException causeOf(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof ChannelException e) {
                return e;
            }
        }
        throw new AssertionError("no ChannelException in", t);
    }

    static void assertReason(Future<?> future, ChannelException.Reason reason, String... contains) {
        Throwable t = catchThrowable(() -> future.get(30, TimeUnit.SECONDS));
        assertThat(t).as("the listener's side refused").isNotNull();
        ChannelException e = causeOf(t);
        assertThat(e.reason()).as(e.getMessage()).isEqualTo(reason);
        if (contains.length > 0) {
            assertThat(e.getMessage()).contains(contains);
        }
    }

    static KeyManagerFactory keyManagers(Path keystore) throws Exception {
        char[] password = Files.readString(Identity.passwordFileOf(keystore)).strip().toCharArray();
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(keystore)) {
            store.load(in, password);
        }
        KeyManagerFactory f = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        f.init(store, password);
        return f;
    }

    /** The old client trusts anything: the test is about the protocol, not the certificate. */
    static final class TrustAll implements X509TrustManager {
        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }

}
