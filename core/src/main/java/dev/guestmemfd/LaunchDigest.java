package dev.guestmemfd;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * A measurement of the pages populated into private memory, like the launch digest of
 * SEV-SNP or TDX: SHA-384 over, for each page in the order populated, its file offset
 * (8 bytes, big-endian) followed by its 4096 bytes.
 *
 * @implSpec Not thread safe.
 */
public final class LaunchDigest {
    private final MessageDigest sha384;

    public LaunchDigest() {
        try {
            sha384 = MessageDigest.getInstance("SHA-384");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-384", e);
        }
    }

    void page(long offset, MemorySegment page) {
        sha384.update(ByteBuffer.allocate(Long.BYTES).putLong(0, offset));
        sha384.update(page.asByteBuffer());
    }

    /** {@return the digest so far, as 48 bytes; the measurement goes on} */
    public byte[] digest() {
        try {
            return ((MessageDigest) sha384.clone()).digest();
        } catch (CloneNotSupportedException e) {
            throw new IllegalStateException("SHA-384 digests clone", e);
        }
    }

    /** {@return the digest so far in lower-case hex} */
    public String hex() {
        return HexFormat.of().formatHex(digest());
    }
}
