package dev.guestmemfd.migration;

import java.io.Closeable;
import java.io.FilterInputStream;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketAddress;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.Objects;
import javax.crypto.SecretKey;
import javax.crypto.spec.SecretKeySpec;
import javax.net.ssl.ExtendedSSLSession;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSocket;

/**
 * A mutually authenticated connection between the two ends of a migration: TLS 1.3 from the
 * JDK, each end presenting its {@link Identity} and accepting only its {@link TrustedPeer}.
 * Nothing is readable or writable before both ends are proven; every byte after that is
 * encrypted and authenticated, and an altered, dropped or replayed record ends the channel
 * with a {@link ChannelException}.
 *
 * <p>The source connects ({@link #connect}); the destination listens ({@link MigrationListener}).
 * Each read waits at most the timeout given when the channel was opened, so a silent peer
 * ends a migration instead of hanging it.
 *
 * <p>{@link #sealingKey()} is a key that both ends derive from this session alone (the TLS
 * keying-material exporter): nobody without both the session's secrets has it, and no other
 * session, earlier or replayed, yields the same key.
 *
 * @implSpec One thread may read while another writes; each direction is for one thread at a time.
 */
public final class MigrationChannel implements Closeable {
    private static final int SEALING_KEY_BYTES = 32;

    private final SSLSocket socket;
    private final Socket plain;
    private final String peerName;
    private final X509Certificate peer;
    private final SecretKey sealingKey;
    private final InputStream in;
    private final OutputStream out;

    private MigrationChannel(SSLSocket socket, Socket plain, String where) throws IOException {
        this.socket = socket;
        this.plain = plain;
        SSLSession session = socket.getSession();
        if (!Tls.PROTOCOL.equals(session.getProtocol())) {
            // The pinned parameters make this unreachable; checked anyway, as the whole model rests on it.
            throw new ChannelException(ChannelException.Reason.DOWNGRADE, where + ": negotiated " + session.getProtocol()
                    + ", not " + Tls.PROTOCOL, null);
        }
        Certificate[] presented = session.getPeerCertificates();
        this.peer = (X509Certificate) presented[0];
        this.peerName = peer.getSubjectX500Principal().getName() + " at " + socket.getRemoteSocketAddress();
        this.sealingKey = export((ExtendedSSLSession) session);
        String reading = "reading from " + peerName;
        String writing = "writing to " + peerName;
        this.in = new FilterInputStream(socket.getInputStream()) {
            @Override
            public int read() throws IOException {
                try {
                    return super.read();
                } catch (IOException e) {
                    throw Tls.classify(e, reading);
                }
            }

            @Override
            public int read(byte[] b, int off, int len) throws IOException {
                try {
                    return super.read(b, off, len);
                } catch (IOException e) {
                    throw Tls.classify(e, reading);
                }
            }
        };
        this.out = new FilterOutputStream(socket.getOutputStream()) {
            @Override
            public void write(int b) throws IOException {
                try {
                    out.write(b);
                } catch (IOException e) {
                    throw Tls.classify(e, writing);
                }
            }

            @Override
            public void write(byte[] b, int off, int len) throws IOException {
                try {
                    out.write(b, off, len);
                } catch (IOException e) {
                    throw Tls.classify(e, writing);
                }
            }

            @Override
            public void flush() throws IOException {
                try {
                    out.flush();
                } catch (IOException e) {
                    throw Tls.classify(e, writing);
                }
            }
        };
    }

    /**
     * {@return a channel to the destination listening at {@code address}, proven to be {@code peer}}
     * The handshake is complete when this returns.
     *
     * @param timeout how long to wait for the connection, the handshake, and each read after it
     * @throws ChannelException with {@link ChannelException.Reason#WRONG_PEER} when the other end
     *                          is not {@code peer} or refuses {@code identity};
     *                          {@link ChannelException.Reason#DOWNGRADE} when it will not speak TLS 1.3;
     *                          {@link ChannelException.Reason#TAMPERED} when the handshake was altered;
     *                          {@link ChannelException.Reason#TIMEOUT} when it stays silent;
     *                          {@link ChannelException.Reason#BROKEN} when nobody listens there
     * @throws IllegalArgumentException when the timeout is not positive or over {@code Integer.MAX_VALUE} ms
     */
    public static MigrationChannel connect(InetSocketAddress address, Identity identity, TrustedPeer peer, Duration timeout)
            throws IOException {
        Objects.requireNonNull(address, "address");
        Objects.requireNonNull(identity, "identity");
        Objects.requireNonNull(peer, "peer");
        int millis = millis(timeout);
        String where = "migration channel to " + address;
        if (address.isUnresolved()) {
            throw new ChannelException(ChannelException.Reason.BROKEN, where + ": cannot resolve " + address.getHostString(), null);
        }
        SSLContext context = Tls.context(identity, peer);
        Socket plain = new Socket();
        try {
            plain.connect(address, millis);
            plain.setSoTimeout(millis);
            plain.setTcpNoDelay(true);
            SSLSocket tls = (SSLSocket) context.getSocketFactory().createSocket(plain, address.getHostString(), address.getPort(), false);
            tls.setUseClientMode(true);
            tls.setSSLParameters(Tls.parameters(context, false));
            tls.startHandshake();
            return confirmed(new MigrationChannel(tls, plain, where), true);
        } catch (IOException e) {
            ChannelException failed = Tls.classify(e, where);
            Tls.hangUp(plain);
            throw failed;
        }
    }

    /** Accepts a handshaken server-side socket; used by {@link MigrationListener}. */
    static MigrationChannel accepted(SSLSocket tls, Socket plain, String where) throws IOException {
        return confirmed(new MigrationChannel(tls, plain, where), false);
    }

    /**
     * The listener sends one byte once it accepted the connecting end's certificate, and the
     * connecting end waits for it: in TLS 1.3 the client's certificate is judged after the
     * client's handshake is over, so only then does the source know it may send a guest. The
     * client writes nothing before, so a refusal reaches it as the listener's alert, not as a
     * reset connection.
     */
    private static MigrationChannel confirmed(MigrationChannel channel, boolean connecting) throws IOException {
        try {
            if (connecting) {
                expectReady(channel);
            } else {
                channel.out.write(READY);
                channel.out.flush();
            }
            return channel;
        } catch (IOException e) {
            channel.socket.close();
            Tls.hangUp(channel.plain);
            throw e;
        }
    }

    private static final int READY = 0x4d;

    private static void expectReady(MigrationChannel channel) throws IOException {
        int b = channel.in.read();
        if (b != READY) {
            throw new ChannelException(ChannelException.Reason.BROKEN, "migration channel with " + channel.peerName
                    + ": the other end " + (b < 0 ? "closed before it was ready" : "sent something else than ready"), null);
        }
    }

    static int millis(Duration timeout) {
        Objects.requireNonNull(timeout, "timeout");
        if (timeout.isNegative() || timeout.isZero() || timeout.compareTo(Duration.ofMillis(Integer.MAX_VALUE)) > 0) {
            throw new IllegalArgumentException("timeout " + timeout + ": must be positive and at most " + Integer.MAX_VALUE + " ms");
        }
        return (int) Math.max(1, timeout.toMillis());
    }

    private static SecretKey export(ExtendedSSLSession session) throws IOException {
        try {
            byte[] bytes = session.exportKeyingMaterialData(Tls.SEALING_LABEL, new byte[0], SEALING_KEY_BYTES);
            return new SecretKeySpec(bytes, "AES");
        } catch (javax.net.ssl.SSLKeyException e) {
            throw new IOException("the TLS session exports no keying material: " + e.getMessage(), e);
        }
    }

    /** {@return the stream of what the other end sends} */
    public InputStream in() {
        return in;
    }

    /** {@return the stream to the other end; flush it to send what is buffered} */
    public OutputStream out() {
        return out;
    }

    /** {@return the certificate the other end proved it holds: always the trusted peer's} */
    public X509Certificate peer() {
        return peer;
    }

    /** {@return the other end's certificate subject and address, for messages} */
    public String peerName() {
        return peerName;
    }

    /** {@return the key bound to this session for sealing private pages: AES, 256 bits, the same at both ends} */
    public SecretKey sealingKey() {
        return sealingKey;
    }

    /** {@return the address of the other end} */
    public SocketAddress remoteAddress() {
        return socket.getRemoteSocketAddress();
    }

    /** Closes the connection; idempotent. */
    @Override
    public void close() throws IOException {
        try {
            // The JDK's TLS 1.3 close, with a read timeout set, waits to read one byte from the
            // peer (up to the whole timeout) before it lets go; a close must not wait for the
            // peer. With no timeout it sends close_notify and skips only what has arrived.
            try {
                socket.setSoTimeout(0);
            } catch (java.net.SocketException closed) {
                // closed already: nothing to wait for
            }
            socket.close();
        } finally {
            plain.close();
        }
    }
}
