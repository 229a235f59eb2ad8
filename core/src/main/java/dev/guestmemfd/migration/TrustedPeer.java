package dev.guestmemfd.migration;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.cert.CertificateEncodingException;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.Collection;
import java.util.HexFormat;
import java.util.Objects;

/**
 * Who the other end of a migration must be: exactly one certificate, pinned. A handshake
 * succeeds only when the other end presents this very certificate (byte for byte, within its
 * validity) and proves it holds the certificate's private key. No certificate authority, host
 * name or DNS answer takes part.
 */
public final class TrustedPeer {
    private final X509Certificate certificate;
    private final byte[] encoded;

    private TrustedPeer(X509Certificate certificate) throws CertificateEncodingException {
        this.certificate = certificate;
        this.encoded = certificate.getEncoded();
    }

    /** {@return a peer that must present {@code certificate}} */
    public static TrustedPeer of(X509Certificate certificate) {
        Objects.requireNonNull(certificate, "certificate");
        try {
            return new TrustedPeer(certificate);
        } catch (CertificateEncodingException e) {
            throw new IllegalArgumentException("a certificate that cannot be encoded cannot be pinned", e);
        }
    }

    /**
     * {@return the peer whose certificate is in {@code file}, PEM or DER}
     *
     * @throws IOException when the file is missing or holds not exactly one X.509 certificate
     */
    public static TrustedPeer load(Path file) throws IOException {
        Objects.requireNonNull(file, "file");
        if (!Files.isRegularFile(file)) {
            throw new IOException(file + ": no such file (the certificate of the trusted peer)");
        }
        try (InputStream in = Files.newInputStream(file)) {
            Collection<? extends java.security.cert.Certificate> all = CertificateFactory.getInstance("X.509").generateCertificates(in);
            if (all.size() != 1 || !(all.iterator().next() instanceof X509Certificate x509)) {
                throw new IOException(file + ": a peer file holds exactly one X.509 certificate, this one " + all.size());
            }
            return of(x509);
        } catch (CertificateException e) {
            throw new IOException(file + ": not a certificate: " + e.getMessage(), e);
        }
    }

    /** {@return the pinned certificate} */
    public X509Certificate certificate() {
        return certificate;
    }

    /** {@return true when {@code presented} is the pinned certificate, byte for byte} */
    boolean matches(X509Certificate presented) throws CertificateEncodingException {
        return MessageDigest.isEqual(encoded, presented.getEncoded());
    }

    /** {@return the SHA-256 fingerprint of the pinned certificate, in hex, for messages} */
    public String fingerprint() {
        try {
            return HexFormat.ofDelimiter(":").formatHex(MessageDigest.getInstance("SHA-256").digest(encoded));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }

    /** {@return the subject and fingerprint of the pinned certificate} */
    @Override
    public String toString() {
        return certificate.getSubjectX500Principal().getName() + " (SHA-256 " + fingerprint() + ")";
    }
}
