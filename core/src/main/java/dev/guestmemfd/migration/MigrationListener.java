package dev.guestmemfd.migration;

import java.io.Closeable;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.Objects;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;

/**
 * The destination's side of a {@link MigrationChannel}: a TCP listener on any address whose
 * connections become channels only after the connecting end proved it is the trusted peer.
 * Binding to an address other than loopback is safe: a connection that is not the peer gets a
 * refused handshake and nothing else.
 */
public final class MigrationListener implements Closeable {
    private final ServerSocket server;
    private final Identity identity;
    private final TrustedPeer peer;

    private MigrationListener(ServerSocket server, Identity identity, TrustedPeer peer) {
        this.server = server;
        this.identity = identity;
        this.peer = peer;
    }

    /**
     * {@return a listener at {@code address} (port 0: any free port) for {@code peer}}
     *
     * @throws IOException when the address cannot be bound
     */
    public static MigrationListener bind(InetSocketAddress address, Identity identity, TrustedPeer peer) throws IOException {
        Objects.requireNonNull(address, "address");
        Objects.requireNonNull(identity, "identity");
        Objects.requireNonNull(peer, "peer");
        ServerSocket server = new ServerSocket();
        try {
            server.bind(address, 1);
        } catch (IOException e) {
            server.close();
            throw new IOException("cannot listen on " + address + ": " + e.getMessage(), e);
        }
        return new MigrationListener(server, identity, peer);
    }

    /** {@return the address this listener is bound to, its port resolved} */
    public InetSocketAddress address() {
        return (InetSocketAddress) server.getLocalSocketAddress();
    }

    /**
     * {@return the next connection, once it proved to be the trusted peer}
     * A connection that fails the handshake is closed and reported; the listener stays open
     * for the caller to decide whether to accept again.
     *
     * @param timeout how long to wait for a connection, then for the handshake and each read on the channel
     * @throws ChannelException with {@link ChannelException.Reason#WRONG_PEER},
     *                          {@link ChannelException.Reason#DOWNGRADE},
     *                          {@link ChannelException.Reason#TAMPERED} (a replayed session among them),
     *                          {@link ChannelException.Reason#TIMEOUT} or {@link ChannelException.Reason#BROKEN},
     *                          as {@link MigrationChannel#connect}
     * @throws IllegalArgumentException when the timeout is not positive or over {@code Integer.MAX_VALUE} ms
     */
    public MigrationChannel accept(Duration timeout) throws IOException {
        int millis = MigrationChannel.millis(timeout);
        String where = "migration channel on " + address();
        Socket plain;
        try {
            server.setSoTimeout(millis);
            plain = server.accept();
        } catch (IOException e) {
            throw Tls.classify(e, where + " (waiting for the source)");
        }
        where = "migration channel from " + plain.getRemoteSocketAddress();
        try {
            plain.setSoTimeout(millis);
            plain.setTcpNoDelay(true);
            SSLContext context = Tls.context(identity, peer);
            SSLSocket tls = (SSLSocket) context.getSocketFactory().createSocket(plain, null, false);
            tls.setUseClientMode(false);
            tls.setSSLParameters(Tls.parameters(context, true));
            tls.startHandshake();
            return MigrationChannel.accepted(tls, plain, where);
        } catch (IOException e) {
            ChannelException failed = Tls.classify(e, where);
            Tls.hangUp(plain);
            throw failed;
        }
    }

    /** Stops listening; idempotent. A thread waiting in {@link #accept} gets a {@link ChannelException}. */
    @Override
    public void close() throws IOException {
        server.close();
    }
}
