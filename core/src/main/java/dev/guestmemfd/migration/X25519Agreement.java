package dev.guestmemfd.migration;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.MessageDigest;
import java.security.PublicKey;
import java.security.spec.X509EncodedKeySpec;
import javax.crypto.KeyAgreement;
import javax.crypto.SecretKey;
import javax.crypto.spec.SecretKeySpec;

/**
 * The unauthenticated key agreement of the loopback migrations: each side sends an X25519
 * public key (u16 length, then its X.509 bytes) and the session key is SHA-256 of the shared
 * secret. Neither side learns who the other is, so anyone in the path can run it with both
 * ends: use it between two processes of one machine only. An authenticated channel replaces
 * it by handing the migration its own session key; nothing else depends on this class.
 */
public final class X25519Agreement {
    private X25519Agreement() {
    }

    /**
     * {@return an AES-256 key agreed with the other side} Reads exactly the other side's
     * message from {@code in} and nothing after it, so the conversation can go on over the
     * same streams.
     *
     * @throws IOException when the other side hangs up, or sends a key that is not X25519
     */
    public static SecretKey agree(InputStream in, OutputStream out) throws IOException {
        DataOutputStream dout = new DataOutputStream(out);
        DataInputStream din = new DataInputStream(in);
        try {
            KeyPair mine = KeyPairGenerator.getInstance("X25519").generateKeyPair();
            byte[] encoded = mine.getPublic().getEncoded();
            dout.writeShort(encoded.length);
            dout.write(encoded);
            dout.flush();
            byte[] theirs = new byte[din.readUnsignedShort()];
            din.readFully(theirs);
            PublicKey other = KeyFactory.getInstance("X25519").generatePublic(new X509EncodedKeySpec(theirs));
            KeyAgreement agreement = KeyAgreement.getInstance("X25519");
            agreement.init(mine.getPrivate());
            agreement.doPhase(other, true);
            byte[] secret = MessageDigest.getInstance("SHA-256").digest(agreement.generateSecret());
            return new SecretKeySpec(secret, "AES");
        } catch (GeneralSecurityException e) {
            throw new IOException("key agreement failed: " + e.getMessage(), e);
        }
    }
}
