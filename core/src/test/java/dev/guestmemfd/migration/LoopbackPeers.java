package dev.guestmemfd.migration;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

/**
 * The fixture of the tests that run the authenticated migration channel over loopback: the
 * example identities of the source, the destination and a stranger, each end's trust in the
 * other, and a thread pool for the ends that run beside the test's own thread.
 */
abstract class LoopbackPeers {
    static final InetAddress LO = InetAddress.getLoopbackAddress();

    @TempDir
    static Path keys;
    static Identity source;
    static Identity destination;
    static Identity stranger;
    static TrustedPeer sourcePeer;
    static TrustedPeer destinationPeer;
    static TrustedPeer strangerPeer;
    static ExecutorService pool;

    @BeforeAll
    static void makeIdentities() throws IOException {
        ExampleIdentities.create(keys);
        source = Identity.load(keys.resolve("source.p12"));
        destination = Identity.load(keys.resolve("destination.p12"));
        stranger = Identity.load(keys.resolve("stranger.p12"));
        sourcePeer = TrustedPeer.load(keys.resolve("source.crt"));
        destinationPeer = TrustedPeer.load(keys.resolve("destination.crt"));
        strangerPeer = TrustedPeer.load(keys.resolve("stranger.crt"));
        pool = Executors.newCachedThreadPool();
    }

    @AfterAll
    static void stopPool() throws InterruptedException {
        pool.shutdownNow();
        assertThat(pool.awaitTermination(10, TimeUnit.SECONDS)).isTrue();
    }

    /** {@return the destination's listener on loopback, any free port, trusting the source} */
    static MigrationListener destinationListener() throws IOException {
        return MigrationListener.bind(new InetSocketAddress(LO, 0), destination, sourcePeer);
    }
}
