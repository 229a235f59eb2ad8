package dev.guestmemfd.cli;

import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import javax.crypto.SecretKey;
import javax.crypto.spec.SecretKeySpec;

/**
 * The key that seals a snapshot file: 32 random bytes in a file only its owner may read. It
 * plays the part of the key two owners agree on in a migration; whoever holds it can open
 * the snapshot's private pages, so it lives apart from the snapshot.
 */
final class SnapshotKey {
    static final int BYTES = 32;

    private SnapshotKey() {
    }

    /** {@return the key in {@code file}, made (mode 0600) if there is none yet} */
    static SecretKey readOrCreate(Path file) throws IOException {
        if (!Files.exists(file)) {
            byte[] key = new byte[BYTES];
            new SecureRandom().nextBytes(key);
            try {
                Files.createFile(file, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
                Files.write(file, key);
                return new SecretKeySpec(key, "AES");
            } catch (FileAlreadyExistsException raced) {
                // made meanwhile by someone else: use theirs
            }
        }
        return read(file);
    }

    /**
     * {@return the key in {@code file}}
     *
     * @throws Failure naming the key file and the cause: ENOENT, EACCES, EISDIR, or EINVAL for
     *                 a file that is not 32 bytes
     */
    static SecretKey read(Path file) {
        UserFiles.requireReadable("key file", file);
        byte[] key;
        try {
            key = Files.readAllBytes(file);
        } catch (IOException e) {
            throw Failure.io("key file " + file, e);
        }
        if (key.length != BYTES) {
            throw new Failure(dev.guestmemfd.Errno.EINVAL, "key file " + file + ": not a snapshot key (" + BYTES
                    + " bytes expected, " + key.length + " found)");
        }
        return new SecretKeySpec(key, "AES");
    }

    /** {@return where the key of {@code snapshot} lives unless told: beside it, with {@code .key} added} */
    static Path besides(Path snapshot) {
        return snapshot.resolveSibling(snapshot.getFileName() + ".key");
    }
}
