package dev.guestmemfd.testing;

import java.security.GeneralSecurityException;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;

/** Keys for the tests that seal snapshots and migration streams. */
public final class TestKeys {
    private TestKeys() {
    }

    /** {@return a fresh random 256-bit AES key} */
    public static SecretKey aes256() {
        try {
            KeyGenerator g = KeyGenerator.getInstance("AES");
            g.init(256);
            return g.generateKey();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }
}
