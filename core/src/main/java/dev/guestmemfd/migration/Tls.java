package dev.guestmemfd.migration;

import java.io.EOFException;
import java.io.IOException;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.security.GeneralSecurityException;
import java.security.Principal;
import java.security.PrivateKey;
import java.security.cert.CertificateException;
import java.security.cert.X509Certificate;
import java.util.List;
import java.util.Locale;
import javax.net.ssl.KeyManager;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManager;
import javax.net.ssl.X509ExtendedKeyManager;
import javax.net.ssl.X509ExtendedTrustManager;

/**
 * The TLS of a migration channel, in one place: TLS 1.3 and nothing older, its AEAD suites
 * only, both ends presenting a certificate, trust being the one pinned peer certificate, and a
 * fresh context per connection so that no session is ever resumed.
 */
final class Tls {
    static final String PROTOCOL = "TLSv1.3";
    static final String[] SUITES = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"};
    /** The exporter label of the sealing key: RFC 8446 section 7.5, one label per use. */
    static final String SEALING_LABEL = "EXPORTER-guestmemfd-migration-sealing-key";
    private static final String ALIAS = "identity";

    private Tls() {
    }

    /** {@return a context of its own for one connection of {@code identity} to {@code peer}} */
    static SSLContext context(Identity identity, TrustedPeer peer) throws IOException {
        try {
            SSLContext context = SSLContext.getInstance(PROTOCOL);
            context.init(new KeyManager[] {new OwnKey(identity)}, new TrustManager[] {new PinnedPeer(peer)}, null);
            return context;
        } catch (GeneralSecurityException e) {
            throw new IOException("this JDK cannot set up TLS 1.3: " + e.getMessage(), e);
        }
    }

    /** {@return the parameters both ends run with; the listener asks for the client's certificate} */
    static SSLParameters parameters(SSLContext context, boolean server) {
        SSLParameters p = context.getDefaultSSLParameters();
        p.setProtocols(new String[] {PROTOCOL});
        p.setCipherSuites(SUITES.clone());
        // The peer is who its pinned certificate says, not what a name resolves to.
        p.setEndpointIdentificationAlgorithm(null);
        p.setServerNames(List.of());
        if (server) {
            p.setNeedClientAuth(true);
        }
        return p;
    }

    /** The peer presented a certificate other than the pinned one. */
    static final class PeerMismatch extends CertificateException {
        private static final long serialVersionUID = 1L;

        PeerMismatch(String message) {
            super(message);
        }
    }

    /** Trusts exactly one certificate, in its validity period: no authority, no host name. */
    private static final class PinnedPeer extends X509ExtendedTrustManager {
        private final TrustedPeer peer;

        PinnedPeer(TrustedPeer peer) {
            this.peer = peer;
        }

        private void check(X509Certificate[] chain) throws CertificateException {
            if (chain == null || chain.length == 0) {
                throw new PeerMismatch("the other end presented no certificate; the trusted peer is " + peer);
            }
            if (!peer.matches(chain[0])) {
                throw new PeerMismatch("the other end is " + chain[0].getSubjectX500Principal().getName()
                        + ", not the trusted peer " + peer);
            }
            chain[0].checkValidity();
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, Socket socket) throws CertificateException {
            check(chain);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, Socket socket) throws CertificateException {
            check(chain);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine) throws CertificateException {
            check(chain);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine) throws CertificateException {
            check(chain);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            check(chain);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            check(chain);
        }

        /** {@return none: naming the pinned peer's issuer would only make the other end's choice of key harder} */
        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }

    /** Offers this end's one identity wherever its key type fits. */
    private static final class OwnKey extends X509ExtendedKeyManager {
        private final Identity identity;

        OwnKey(Identity identity) {
            this.identity = identity;
        }

        private String fitting(String keyType) {
            return keyType != null && keyType.equalsIgnoreCase(identity.key().getAlgorithm()) ? ALIAS : null;
        }

        private String fitting(String[] keyTypes) {
            if (keyTypes != null) {
                for (String t : keyTypes) {
                    if (fitting(t) != null) {
                        return ALIAS;
                    }
                }
            }
            return null;
        }

        @Override
        public String[] getClientAliases(String keyType, Principal[] issuers) {
            return fitting(keyType) == null ? null : new String[] {ALIAS};
        }

        @Override
        public String chooseClientAlias(String[] keyType, Principal[] issuers, Socket socket) {
            return fitting(keyType);
        }

        @Override
        public String chooseEngineClientAlias(String[] keyType, Principal[] issuers, SSLEngine engine) {
            return fitting(keyType);
        }

        @Override
        public String[] getServerAliases(String keyType, Principal[] issuers) {
            return fitting(keyType) == null ? null : new String[] {ALIAS};
        }

        @Override
        public String chooseServerAlias(String keyType, Principal[] issuers, Socket socket) {
            return fitting(keyType);
        }

        @Override
        public String chooseEngineServerAlias(String keyType, Principal[] issuers, SSLEngine engine) {
            return fitting(keyType);
        }

        @Override
        public X509Certificate[] getCertificateChain(String alias) {
            return ALIAS.equals(alias) ? identity.chain() : null;
        }

        @Override
        public PrivateKey getPrivateKey(String alias) {
            return ALIAS.equals(alias) ? identity.key() : null;
        }
    }

    /**
     * {@return {@code e} told in the channel's terms}: which of the threat model's cases it is,
     * judged from the JDK's exception and its alerts.
     *
     * @param where what was being done, and with whom, for the message
     */
    static ChannelException classify(IOException e, String where) {
        if (e instanceof ChannelException c) {
            return c;
        }
        StringBuilder all = new StringBuilder();
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof PeerMismatch m) {
                return new ChannelException(ChannelException.Reason.WRONG_PEER, where + ": wrong peer: " + m.getMessage(), e);
            }
            if (t instanceof SocketTimeoutException) {
                return new ChannelException(ChannelException.Reason.TIMEOUT, where + ": the other end said nothing in time", e);
            }
            all.append(' ').append(t.getMessage());
        }
        String text = all.toString().toLowerCase(Locale.ROOT);
        if (containsAny(text, "bad_certificate", "certificate_unknown", "certificate_required", "unsupported_certificate",
                "empty client certificate", "empty server certificate", "no available authentication scheme")) {
            return new ChannelException(ChannelException.Reason.WRONG_PEER,
                    where + ": wrong peer: the other end refused this end's certificate, or presented none (" + e.getMessage() + ")", e);
        }
        if (containsAny(text, "protocol_version", "not enabled or supported", "no appropriate protocol", "unsupported protocol",
                "no negotiable cipher suite", "insufficient_security")) {
            return new ChannelException(ChannelException.Reason.DOWNGRADE,
                    where + ": refused: the other end does not speak TLS 1.3 with its AEAD suites (" + e.getMessage() + ")", e);
        }
        if (containsAny(text, "tag mismatch", "bad_record_mac", "decrypt_error", "decryption", "cannot be verified",
                "integrity", "illegal_parameter", "decode_error", "unexpected_message", "handshake_failure")) {
            return new ChannelException(ChannelException.Reason.TAMPERED,
                    where + ": a record did not authenticate: altered in transit, or a replayed session (" + e.getMessage() + ")", e);
        }
        String why = e instanceof EOFException || text.contains("terminated") || text.contains("closed")
                ? "the other end closed the connection"
                : text.contains("broken pipe") || text.contains("connection reset")
                ? "the other end hung up (it refused what it received, or the network broke: its own error says which)"
                : "the connection failed";
        return new ChannelException(ChannelException.Reason.BROKEN, where + ": " + why + " (" + e.getMessage() + ")", e);
    }

    /**
     * Ends a refused connection so that the other end reads this end's alert, not a reset:
     * sends end-of-stream, takes what the other end still sends for a moment, then closes.
     * Without this, an end still writing its handshake gets only "broken pipe" and cannot
     * tell a refused certificate from a cut cable.
     */
    static void hangUp(Socket plain) {
        try (plain) {
            if (plain.isConnected() && !plain.isClosed()) {
                plain.shutdownOutput();
                plain.setSoTimeout(HANG_UP_MILLIS);
                plain.getInputStream().skip(Long.MAX_VALUE);
            }
        } catch (IOException e) {
            // The connection is over either way.
        }
    }

    private static final int HANG_UP_MILLIS = 2000;

    private static boolean containsAny(String text, String... words) {
        for (String w : words) {
            if (text.contains(w)) {
                return true;
            }
        }
        return false;
    }
}
