package dev.guestmemfd;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;

/**
 * The snapshot stream's layout and its sealing: what the bytes are, apart from who writes and
 * who reads them. Version 4, big-endian:
 * <pre>
 * header : "GMEMSNAP" u32 version u64 fileSize u32 pageSize byte[16] streamId
 * record : u8 kind, then
 *   1 shared pages   u64 offset u32 length, length bytes, 16-byte tag (version 4; no tag before)
 *   2 private pages  u64 offset u32 length, length + 16 bytes: AES-GCM ciphertext and tag
 *   3 private hole   u64 offset u32 pages   (no memory; the pages are private)
 *   4 shared hole    u64 offset u32 pages   (no memory; the pages are shared)
 *   5 owner state    u64 0      u32 length, length + 16 bytes sealed like private pages
 *   6 poisoned       u64 offset u32 pages   (failed pages: no memory travels; their attribute
 *                                            is that of the hole record just before; version 3)
 *   7 layout         u64 0      u32 length, length + 16 bytes sealed like private pages: the
 *                                            final state of every page, runs of u64 offset,
 *                                            u64 length, u8 flags (1 private, 2 allocated);
 *                                            version 4, before any page record
 * end    : u8 0, u64 records, then 32 + 16 bytes: the SHA-256 of everything before, sealed
 * </pre>
 * The stream ends with the sealed digest: nothing follows it. Versions 2 and 3 still read:
 * version 2 has no kind 6, neither has kind 7 nor the shared records' tag.
 *
 * <p>Sealing: AES-256-GCM, IV = the first 4 bytes of streamId and the record's number (u64),
 * AAD = streamId, kind, offset; so a sealed record opens only in its own place of its own
 * stream. A shared record's tag (version 4) is the same AES-GCM over no plaintext, with the
 * record's length and bytes added to the AAD (GMAC): its bytes are checked alone, in their
 * place, before any reader sees them. A layout promises that every page it names is named by
 * exactly one later record, which agrees with it ({@link LayoutPromise}), so a reader knows each
 * page's final state before its bytes. Holes are authenticated by the layout where there is one,
 * and always by the sealed digest at the end.
 */
final class SnapshotFormat {
    static final byte[] MAGIC = "GMEMSNAP".getBytes(StandardCharsets.US_ASCII);
    static final int VERSION = 4;
    /** The oldest version this library reads: version 3 only added {@link #POISONED}, version 4 the tags and {@link #LAYOUT}. */
    static final int OLDEST_VERSION = 2;
    static final int END = 0;
    static final int SHARED = 1;
    static final int PRIVATE = 2;
    static final int PRIVATE_HOLE = 3;
    static final int SHARED_HOLE = 4;
    static final int STATE = 5;
    static final int POISONED = 6;
    static final int LAYOUT = 7;
    /** The first version with a tag on each shared record and the layout record. */
    static final int TAGGED_VERSION = 4;
    /** One run of a layout: u64 offset, u64 length, u8 flags. */
    static final int LAYOUT_RUN_BYTES = 8 + 8 + 1;
    static final int LAYOUT_PRIVATE = 1;
    static final int LAYOUT_ALLOCATED = 2;
    static final int STREAM_ID_BYTES = 16;
    static final int HEADER_BYTES = MAGIC.length + 4 + 8 + 4 + STREAM_ID_BYTES;
    /** u8 kind, u64 offset, u32 length or pages. */
    static final int RECORD_HEADER_BYTES = 1 + 8 + 4;
    static final int TAG_BYTES = 16;
    /** The sealed SHA-256 after the end record. */
    static final int TRAILER_BYTES = 32 + TAG_BYTES;
    /** The record number in the IV of the sealed digest: no record has it. */
    static final long TRAILER_RECORD = Long.MAX_VALUE;
    /**
     * Bytes of one page record at most: large runs travel in pieces so a record never needs
     * much heap. 64 KiB rather than 1 MiB: in a fresh JVM, AES-GCM gets its compiled intrinsic
     * only after enough calls, and smaller records make more calls for the same bytes.
     */
    static final int CHUNK = 1 << 16;
    /** Owner state records at most: a VM's vCPUs are a few KiB each. */
    static final int MAX_STATE = 16 << 20;

    private SnapshotFormat() {
    }

    /** The header's fields. */
    record Header(int version, long fileSize, byte[] streamId) {
    }

    static void writeHeader(DataOutputStream out, long fileSize, byte[] streamId) throws IOException {
        writeHeader(out, VERSION, fileSize, streamId);
    }

    /** Writes a header of {@code version}: an older one only to test that it still reads. */
    static void writeHeader(DataOutputStream out, int version, long fileSize, byte[] streamId) throws IOException {
        out.write(MAGIC);
        out.writeInt(version);
        out.writeLong(fileSize);
        out.writeInt((int) GuestMemory.PAGE_SIZE);
        out.write(streamId);
    }

    /**
     * {@return the header read from {@code in}}
     *
     * @throws GuestMemoryException {@code EBADMSG} for another format, version or page size
     * @throws java.io.EOFException when the stream ends inside the header
     */
    static Header readHeader(DataInputStream in, String op) throws IOException {
        byte[] magic = new byte[MAGIC.length];
        in.readFully(magic);
        if (!Arrays.equals(magic, MAGIC)) {
            throw bad(op, "not a guestmemfd snapshot");
        }
        int version = in.readInt();
        if (version < OLDEST_VERSION || version > VERSION) {
            throw bad(op, "stream version " + version + ", this library reads " + OLDEST_VERSION + " to " + VERSION);
        }
        long fileSize = in.readLong();
        int pageSize = in.readInt();
        byte[] streamId = new byte[STREAM_ID_BYTES];
        in.readFully(streamId);
        if (pageSize != GuestMemory.PAGE_SIZE || fileSize <= 0 || fileSize % GuestMemory.PAGE_SIZE != 0) {
            throw bad(op, "the stream is of " + pageSize + "-byte pages and a " + fileSize + "-byte file");
        }
        return new Header(version, fileSize, streamId);
    }

    static void writeRecordHeader(DataOutputStream out, int kind, long offset, int length) throws IOException {
        out.writeByte(kind);
        out.writeLong(offset);
        out.writeInt(length);
    }

    /** {@return true for the kinds that carry page bytes} */
    static boolean carriesPages(int kind) {
        return kind == SHARED || kind == PRIVATE;
    }

    /** {@return true for the kinds that mark pages without carrying them, in a stream of {@code version}} */
    static boolean isMark(int kind, int version) {
        return kind == POISONED && version >= 3;
    }

    /** {@return true for the kinds that name pages without memory} */
    static boolean isHole(int kind) {
        return kind == PRIVATE_HOLE || kind == SHARED_HOLE;
    }

    /** {@return true for the kinds that are sealed records (a body and its tag, opened whole)} */
    static boolean isSealedBlob(int kind, int version) {
        return kind == STATE || kind == LAYOUT && version >= TAGGED_VERSION;
    }

    /**
     * {@return the bytes that follow a page record's header in a stream of {@code version}: its
     * length, plus the tag when sealed or, from version 4, tagged}
     */
    static int bodyBytes(int kind, int length, int version) {
        return kind == PRIVATE || kind == SHARED && version >= TAGGED_VERSION ? length + TAG_BYTES : length;
    }

    /** {@return the version 4 tag of a shared record: GMAC of its length and bytes, in its place} */
    static byte[] tag(SecretKey key, byte[] streamId, long record, long offset, byte[] bytes, int length) {
        try {
            Cipher c = cipher(Cipher.ENCRYPT_MODE, key, streamId, record, SHARED, offset);
            c.updateAAD(ByteBuffer.allocate(4).putInt(length).array());
            c.updateAAD(bytes, 0, length);
            return c.doFinal();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM: " + e.getMessage(), e);
        }
    }

    /**
     * Checks the tag that follows the {@code length} bytes of a shared record in {@code body}.
     *
     * @throws GuestMemoryException {@code EBADMSG} when it does not match: altered bytes, another
     *                              place (a record moved, replayed or renumbered), another key
     */
    static void checkTag(SecretKey key, byte[] streamId, long record, long offset, byte[] body, int length, String op) {
        byte[] expected = tag(key, streamId, record, offset, body, length);
        if (!MessageDigest.isEqual(expected, Arrays.copyOfRange(body, length, length + TAG_BYTES))) {
            throw bad(op, "shared record " + record + " (offset " + offset + ") does not check out: altered, moved,"
                    + " or of another key");
        }
    }

    /** {@return a layout record's plaintext for {@code runs}} */
    static byte[] encodeLayout(List<PageRun> runs) {
        ByteBuffer b = ByteBuffer.allocate(runs.size() * LAYOUT_RUN_BYTES);
        for (PageRun run : runs) {
            b.putLong(run.offset()).putLong(run.length())
                    .put((byte) ((run.attribute() == Attribute.PRIVATE ? LAYOUT_PRIVATE : 0) | (run.allocated() ? LAYOUT_ALLOCATED : 0)));
        }
        return b.array();
    }

    /**
     * {@return the runs of an opened layout record}
     *
     * @throws GuestMemoryException {@code EBADMSG} for runs that are not whole pages of the file,
     *                              ascending and apart, or unknown flags
     */
    static List<PageRun> decodeLayout(byte[] plain, long fileSize, String op) {
        if (plain.length % LAYOUT_RUN_BYTES != 0) {
            throw bad(op, "the layout record is malformed");
        }
        ByteBuffer b = ByteBuffer.wrap(plain);
        List<PageRun> runs = new ArrayList<>();
        long end = 0;
        while (b.hasRemaining()) {
            long offset = b.getLong();
            long length = b.getLong();
            int flags = b.get() & 0xff;
            if (offset < end || length <= 0 || offset % GuestMemory.PAGE_SIZE != 0 || length % GuestMemory.PAGE_SIZE != 0
                    || offset > fileSize - length || (flags & ~(LAYOUT_PRIVATE | LAYOUT_ALLOCATED)) != 0) {
                throw bad(op, "the layout record is malformed");
            }
            runs.add(new PageRun(offset, length, (flags & LAYOUT_PRIVATE) != 0 ? Attribute.PRIVATE : Attribute.SHARED,
                    (flags & LAYOUT_ALLOCATED) != 0));
            end = offset + length;
        }
        return List.copyOf(runs);
    }

    static GuestMemoryException bad(String op, String why) {
        return new GuestMemoryException(Errno.EBADMSG, op, why, -1);
    }

    private static byte[] iv(byte[] streamId, long record) {
        return ByteBuffer.allocate(12).put(streamId, 0, 4).putLong(record).array();
    }

    private static byte[] aad(byte[] streamId, int kind, long offset) {
        return ByteBuffer.allocate(STREAM_ID_BYTES + 1 + 8).put(streamId).put((byte) kind).putLong(offset).array();
    }

    /** {@return AES-GCM set up for record {@code record} of the stream: its IV from the place, its AAD from the kind and offset} */
    private static Cipher cipher(int mode, SecretKey key, byte[] streamId, long record, int kind, long offset)
            throws GeneralSecurityException {
        Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
        c.init(mode, key, new GCMParameterSpec(TAG_BYTES * 8, iv(streamId, record)));
        c.updateAAD(aad(streamId, kind, offset));
        return c;
    }

    /** {@return the first {@code length} bytes of {@code plain} sealed as record {@code record} of the stream} */
    static byte[] seal(SecretKey key, byte[] streamId, long record, int kind, long offset, byte[] plain, int length) {
        try {
            return cipher(Cipher.ENCRYPT_MODE, key, streamId, record, kind, offset).doFinal(plain, 0, length);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM: " + e.getMessage(), e);
        }
    }

    /**
     * {@return the plaintext of a record sealed by {@link #seal} in this place of this stream}
     *
     * @throws GuestMemoryException {@code EBADMSG} when it does not open: another key, place
     *                              or stream, or altered bytes
     */
    static byte[] open(SecretKey key, byte[] streamId, long record, int kind, long offset, byte[] sealed, int length,
                       String op) {
        try {
            return cipher(Cipher.DECRYPT_MODE, key, streamId, record, kind, offset).doFinal(sealed, 0, length);
        } catch (AEADBadTagException e) {
            throw bad(op, "a sealed record does not open: wrong key, or the stream was altered");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM: " + e.getMessage(), e);
        }
    }

    static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }
}
