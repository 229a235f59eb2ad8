package dev.guestmemfd;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import javax.crypto.Cipher;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;

/**
 * Snapshot and restore of a guest memory file through its owner, as a migration agent
 * (SEV-SNP's) or migration TD (TDX's) would: only allocated pages travel, holes stay holes,
 * shared pages travel as they are, private pages travel sealed with AES-GCM under a key the
 * two owners agree on. The stream is versioned and authenticated end to end; a truncated,
 * corrupted, wrong-key or replayed stream is refused before anything is written.
 *
 * <p>Stream format, version 1 (big-endian):
 * <pre>
 * header : "GMEMSNAP" u32 version u64 fileSize u32 pageSize byte[16] streamId
 * record : u8 kind (1 shared, 2 private, 3 private hole, 0 end) u64 offset u32 length (pages for a hole)
 *          shared: length bytes; private: length + 16 bytes of AES-GCM ciphertext and tag
 *          (IV: the first 8 bytes of streamId and the record number; AAD: streamId, kind, offset)
 * end    : u8 0, u64 records, 32+16 bytes: SHA-256 of everything before, sealed with AES-GCM
 * </pre>
 */
public final class Snapshot {
    static final byte[] MAGIC = "GMEMSNAP".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    /** The format version written, and the only one read. */
    public static final int VERSION = 1;
    private static final int SHARED = 1;
    private static final int PRIVATE = 2;
    private static final int END = 0;
    /** A private range with no memory: its attribute travels, it has no bytes. */
    private static final int PRIVATE_HOLE = 3;
    private static final int TAG_BITS = 128;

    private Snapshot() {
    }

    /** Remembers the streams already restored, so that none is applied twice. */
    public static final class ReplayGuard {
        private final Set<String> seen = ConcurrentHashMap.newKeySet();

        /** A guard that has seen no stream yet; keep one per receiving owner. */
        public ReplayGuard() {
        }

        boolean firstTime(byte[] streamId) {
            return seen.add(HexFormat.of().formatHex(streamId));
        }
    }

    /**
     * Writes every allocated page of the binding's file to {@code out}.
     *
     * @param owner the owner's binding over the whole file: it alone reads private pages
     * @param key   the AES key the sending and receiving owners share
     * @return the number of page bytes written
     */
    public static long write(Binding owner, SecretKey key, OutputStream out) throws IOException {
        return write(List.of(owner), key, out);
    }

    /**
     * Writes every allocated page of a file whose owners' bindings together cover it, as a
     * VM's memslots do.
     *
     * @see #write(Binding, SecretKey, OutputStream)
     */
    public static long write(List<Binding> owners, SecretKey key, OutputStream out) throws IOException {
        GuestMemory memory = owners.getFirst().memory();
        requireWhole(owners, "snapshot");
        byte[] streamId = new byte[16];
        new SecureRandom().nextBytes(streamId);
        MessageDigest digest = sha256();
        DataOutputStream data = new DataOutputStream(new DigestingStream(out, digest));
        data.write(MAGIC);
        data.writeInt(VERSION);
        data.writeLong(memory.size());
        data.writeInt((int) GuestMemory.PAGE_SIZE);
        data.write(streamId);
        long records = 0;
        long bytes = 0;
        for (PageRun run : memory.pageRuns()) {
            if (!run.allocated()) {
                if (run.attribute() == Attribute.PRIVATE) {
                    data.writeByte(PRIVATE_HOLE);
                    data.writeLong(run.offset());
                    data.writeInt(Math.toIntExact(run.length() / GuestMemory.PAGE_SIZE));
                    records++;
                }
                continue;
            }
            for (long at = run.offset(); at < run.offset() + run.length(); ) {
                Binding owner = ownerOf(owners, at);
                int length = (int) Math.min(Math.min(CHUNK, run.offset() + run.length() - at), owner.offset() + owner.length() - at);
                byte[] plain = owner.pages().asSlice(at - owner.offset(), length).toArray(ValueLayout.JAVA_BYTE);
                boolean sealed = run.attribute() == Attribute.PRIVATE;
                data.writeByte(sealed ? PRIVATE : SHARED);
                data.writeLong(at);
                data.writeInt(length);
                data.write(sealed ? seal(key, streamId, records, PRIVATE, at, plain) : plain);
                java.util.Arrays.fill(plain, (byte) 0);
                records++;
                bytes += length;
                at += length;
            }
        }
        data.writeByte(END);
        data.writeLong(records);
        data.flush();
        out.write(seal(key, streamId, Long.MAX_VALUE, END, records, digest.digest()));
        out.flush();
        return bytes;
    }

    /** Bytes of one record: large runs travel in pieces so a record never needs gigabytes of heap. */
    static final int CHUNK = 1 << 20;

    /**
     * Reads a stream written by {@link #write}, checks all of it, then writes its pages into
     * the binding's file, which must be of the same size and hold no memory yet.
     *
     * @throws GuestMemoryException {@code EBADMSG} for a truncated, corrupted or wrong-key
     *                              stream or an unknown version, {@code EALREADY} for a stream
     *                              already restored, {@code EINVAL} for a file of another size or
     *                              one that is not empty; in every case the file is unchanged
     */
    public static void restore(Binding owner, SecretKey key, InputStream in, ReplayGuard replays) throws IOException {
        restore(List.of(owner), key, in, replays);
    }

    /**
     * Restores into a file whose owners' bindings together cover it.
     *
     * @see #restore(Binding, SecretKey, InputStream, ReplayGuard)
     */
    public static void restore(List<Binding> owners, SecretKey key, InputStream in, ReplayGuard replays) throws IOException {
        GuestMemory memory = owners.getFirst().memory();
        requireWhole(owners, "restore");
        String op = "restore(size=" + memory.size() + ")";
        MessageDigest digest = sha256();
        DataInputStream data = new DataInputStream(new DigestingInput(in, digest));
        List<Object[]> records = new ArrayList<>();  // {kind, offset, plain bytes}
        byte[] streamId = new byte[16];
        try {
            byte[] magic = new byte[MAGIC.length];
            data.readFully(magic);
            if (!java.util.Arrays.equals(magic, MAGIC)) {
                throw bad(op, "not a guestmemfd snapshot");
            }
            int version = data.readInt();
            if (version != VERSION) {
                throw bad(op, "stream version " + version + ", this library reads " + VERSION);
            }
            long size = data.readLong();
            int pageSize = data.readInt();
            data.readFully(streamId);
            if (size != memory.size() || pageSize != GuestMemory.PAGE_SIZE) {
                throw new GuestMemoryException("EINVAL", op, "the stream is of a " + size + "-byte file", -1);
            }
            long n = 0;
            while (true) {
                int kind = data.readUnsignedByte();
                if (kind == END) {
                    long count = data.readLong();
                    byte[] expected = digest.digest();
                    byte[] trailer = new byte[32 + TAG_BITS / 8];
                    new DataInputStream(in).readFully(trailer);
                    byte[] sealedDigest = open(key, streamId, Long.MAX_VALUE, END, count, trailer, op);
                    if (count != n || !MessageDigest.isEqual(sealedDigest, expected)) {
                        throw bad(op, "the stream was altered (its authenticated digest does not match)");
                    }
                    break;
                }
                long offset = data.readLong();
                int length = data.readInt();
                if (kind == PRIVATE_HOLE) {
                    long bytes = (long) length * GuestMemory.PAGE_SIZE;
                    if (length <= 0 || offset < 0 || offset % GuestMemory.PAGE_SIZE != 0 || offset > size - bytes) {
                        throw bad(op, "record " + n + " is malformed");
                    }
                    records.add(new Object[] {kind, offset, bytes});
                    n++;
                    continue;
                }
                if ((kind != SHARED && kind != PRIVATE) || length <= 0 || length > CHUNK || offset < 0
                        || offset % GuestMemory.PAGE_SIZE != 0 || offset + length > size) {
                    throw bad(op, "record " + n + " is malformed");
                }
                Binding owner = ownerOf(owners, offset);
                if (offset + length > owner.offset() + owner.length()) {
                    throw bad(op, "record " + n + " crosses the end of a binding");
                }
                byte[] body = new byte[kind == PRIVATE ? length + TAG_BITS / 8 : length];
                data.readFully(body);
                records.add(new Object[] {kind, offset, kind == PRIVATE ? open(key, streamId, n, PRIVATE, offset, body, op) : body});
                n++;
            }
        } catch (EOFException truncated) {
            throw bad(op, "the stream ends early");
        }
        if (memory.pageCounts().allocated() != 0) {
            throw new GuestMemoryException("EINVAL", op, "the target file already holds memory", -1);
        }
        if (!replays.firstTime(streamId)) {
            throw new GuestMemoryException("EALREADY", op, "stream " + HexFormat.of().formatHex(streamId)
                    + " was already restored (replay)", -1);
        }
        for (Object[] r : records) {
            long offset = (Long) r[1];
            if ((Integer) r[0] == PRIVATE_HOLE) {
                memory.convert(offset, (Long) r[2], Attribute.PRIVATE, Content.ZERO);
                continue;
            }
            byte[] bytes = (byte[]) r[2];
            long rounded = (bytes.length + GuestMemory.PAGE_SIZE - 1) / GuestMemory.PAGE_SIZE * GuestMemory.PAGE_SIZE;
            Attribute attribute = (Integer) r[0] == PRIVATE ? Attribute.PRIVATE : Attribute.SHARED;
            memory.convert(offset, rounded, attribute, Content.ZERO);
            Binding owner = ownerOf(owners, offset);
            MemorySegment.copy(MemorySegment.ofArray(bytes), 0, owner.pages(), offset - owner.offset(), bytes.length);
            java.util.Arrays.fill(bytes, (byte) 0);
        }
    }

    private static void requireWhole(List<Binding> owners, String what) {
        GuestMemory memory = owners.getFirst().memory();
        long covered = 0;
        for (Binding b : owners) {
            if (b.memory() != memory) {
                throw new GuestMemoryException("EINVAL", what, "the bindings belong to different files", -1);
            }
            covered += b.length();
        }
        if (covered != memory.size()) {
            throw new GuestMemoryException("EINVAL", what, "the owners' bindings must cover the whole file", -1);
        }
    }

    private static Binding ownerOf(List<Binding> owners, long offset) {
        for (Binding b : owners) {
            if (offset >= b.offset() && offset - b.offset() < b.length()) {
                return b;
            }
        }
        throw new IllegalStateException("no binding covers offset " + offset);
    }

    private static GuestMemoryException bad(String op, String why) {
        return new GuestMemoryException("EBADMSG", op, why, -1);
    }

    private static byte[] iv(byte[] streamId, long record) {
        return ByteBuffer.allocate(12).put(streamId, 0, 4).putLong(record).array();
    }

    private static byte[] aad(byte[] streamId, int kind, long offset) {
        return ByteBuffer.allocate(16 + 1 + 8).put(streamId).put((byte) kind).putLong(offset).array();
    }

    private static byte[] seal(SecretKey key, byte[] streamId, long record, int kind, long offset, byte[] plain) {
        try {
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
            c.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(TAG_BITS, iv(streamId, record)));
            c.updateAAD(aad(streamId, kind, offset));
            return c.doFinal(plain);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM: " + e.getMessage(), e);
        }
    }

    private static byte[] open(SecretKey key, byte[] streamId, long record, int kind, long offset, byte[] sealed, String op) {
        try {
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
            c.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BITS, iv(streamId, record)));
            c.updateAAD(aad(streamId, kind, offset));
            return c.doFinal(sealed);
        } catch (javax.crypto.AEADBadTagException e) {
            throw bad(op, "a sealed record does not open: wrong key, or the stream was altered");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM: " + e.getMessage(), e);
        }
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }

    /** Passes bytes through and into a digest. */
    private static final class DigestingStream extends java.io.FilterOutputStream {
        private final MessageDigest digest;

        DigestingStream(OutputStream out, MessageDigest digest) {
            super(out);
            this.digest = digest;
        }

        @Override
        public void write(int b) throws IOException {
            out.write(b);
            digest.update((byte) b);
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            out.write(b, off, len);
            digest.update(b, off, len);
        }
    }

    /** Reads bytes through a digest. */
    private static final class DigestingInput extends java.io.FilterInputStream {
        private final MessageDigest digest;

        DigestingInput(InputStream in, MessageDigest digest) {
            super(in);
            this.digest = digest;
        }

        @Override
        public int read() throws IOException {
            int b = in.read();
            if (b >= 0) {
                digest.update((byte) b);
            }
            return b;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            int n = in.read(b, off, len);
            if (n > 0) {
                digest.update(b, off, n);
            }
            return n;
        }
    }
}
