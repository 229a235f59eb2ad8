package dev.guestmemfd.migration;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Objects;

/**
 * Who this end of a migration is: a private key and the certificate that names its public
 * key. The other end pins that certificate (see {@link TrustedPeer}); the key proves, in each
 * handshake, that this end holds it.
 *
 * <p>Loaded from a PKCS12 keystore holding exactly one private key, whose password is in a
 * file of its own; both files must be readable by their owner alone (mode 0600).
 */
public final class Identity {
    private final PrivateKey key;
    private final List<X509Certificate> chain;

    private Identity(PrivateKey key, List<X509Certificate> chain) {
        this.key = key;
        this.chain = chain;
    }

    /**
     * {@return an identity of {@code key} named by {@code chain}, the first certificate being its own}
     *
     * @throws IllegalArgumentException when the chain is empty
     */
    public static Identity of(PrivateKey key, X509Certificate... chain) {
        Objects.requireNonNull(key, "key");
        Objects.requireNonNull(chain, "chain");
        if (chain.length == 0) {
            throw new IllegalArgumentException("an identity needs its certificate");
        }
        for (X509Certificate c : chain) {
            Objects.requireNonNull(c, "certificate");
        }
        return new Identity(key, List.of(chain));
    }

    /**
     * {@return the identity in {@code keystore}, opened with the password in {@code passwordFile}}
     *
     * @throws IOException when either file is missing or readable by group or others, the
     *                     password is wrong, or the keystore holds no private key or more than one
     */
    public static Identity load(Path keystore, Path passwordFile) throws IOException {
        Objects.requireNonNull(keystore, "keystore");
        Objects.requireNonNull(passwordFile, "passwordFile");
        FileModes.requireOwnerOnly(keystore, "a private key");
        FileModes.requireOwnerOnly(passwordFile, "the password of " + keystore.getFileName());
        char[] password = Files.readString(passwordFile, StandardCharsets.UTF_8).strip().toCharArray();
        try (InputStream in = Files.newInputStream(keystore)) {
            KeyStore store = KeyStore.getInstance("PKCS12");
            try {
                store.load(in, password);
            } catch (IOException e) {
                throw new IOException(keystore + ": not a PKCS12 keystore, or the password in " + passwordFile + " is wrong", e);
            }
            List<String> keys = new ArrayList<>();
            for (String alias : Collections.list(store.aliases())) {
                if (store.isKeyEntry(alias)) {
                    keys.add(alias);
                }
            }
            if (keys.size() != 1) {
                throw new IOException(keystore + ": an identity keystore holds exactly one private key, this one " + keys.size());
            }
            String alias = keys.getFirst();
            if (!(store.getKey(alias, password) instanceof PrivateKey key)) {
                throw new IOException(keystore + ": entry " + alias + " is not a private key");
            }
            Certificate[] certificates = store.getCertificateChain(alias);
            if (certificates == null || certificates.length == 0) {
                throw new IOException(keystore + ": entry " + alias + " has no certificate");
            }
            X509Certificate[] chain = new X509Certificate[certificates.length];
            for (int i = 0; i < certificates.length; i++) {
                if (!(certificates[i] instanceof X509Certificate x509)) {
                    throw new IOException(keystore + ": entry " + alias + " holds a certificate that is not X.509");
                }
                chain[i] = x509;
            }
            return of(key, chain);
        } catch (GeneralSecurityException e) {
            throw new IOException(keystore + ": cannot open it with the password in " + passwordFile + ": " + e.getMessage(), e);
        } finally {
            Arrays.fill(password, '\0');
        }
    }

    /**
     * {@return the identity in {@code keystore}, its password in the file beside it named as
     * the keystore with {@code .password} in place of {@code .p12}}
     *
     * @throws IOException as {@link #load(Path, Path)}
     */
    public static Identity load(Path keystore) throws IOException {
        return load(keystore, passwordFileOf(keystore));
    }

    /** {@return where {@link #load(Path)} looks for the password of {@code keystore}} */
    public static Path passwordFileOf(Path keystore) {
        String name = keystore.getFileName().toString();
        String base = name.endsWith(".p12") ? name.substring(0, name.length() - 4) : name;
        return keystore.resolveSibling(base + ".password");
    }

    /** {@return the certificate of this identity, the one its peer pins} */
    public X509Certificate certificate() {
        return chain.getFirst();
    }

    PrivateKey key() {
        return key;
    }

    X509Certificate[] chain() {
        return chain.toArray(X509Certificate[]::new);
    }

    /** {@return the subject of the certificate, not the key} */
    @Override
    public String toString() {
        return "Identity[" + certificate().getSubjectX500Principal().getName() + "]";
    }
}
