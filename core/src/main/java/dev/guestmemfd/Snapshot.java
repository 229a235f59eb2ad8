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
import java.security.DigestInputStream;
import java.security.DigestOutputStream;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.BitSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Consumer;
import javax.crypto.Cipher;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;

/**
 * Snapshot and restore of a guest memory file through its owner, as a migration agent
 * (SEV-SNP's) or migration TD (TDX's) would: only allocated pages travel, holes stay holes,
 * shared pages travel as they are, private pages travel sealed with AES-GCM under a key the
 * two owners agree on, and so does the owner's own state (a VM's vCPU registers). The stream
 * is versioned and authenticated end to end.
 *
 * <p>A stream is a sequence of records applied in order, a later record of a page replacing an
 * earlier one: a snapshot sends each page once ({@link Writer#writeAll()}); a pre-copy
 * migration sends every page once while the guest runs, then again each page changed since
 * ({@link Writer#writePages(BitSet)}), the last time with the guest paused.
 *
 * <p>Stream format, version 2 (big-endian):
 * <pre>
 * header : "GMEMSNAP" u32 version u64 fileSize u32 pageSize byte[16] streamId
 * record : u8 kind, then
 *   1 shared pages   u64 offset u32 length, length bytes
 *   2 private pages  u64 offset u32 length, length + 16 bytes: AES-GCM ciphertext and tag
 *   3 private hole   u64 offset u32 pages   (no memory; the pages are private)
 *   4 shared hole    u64 offset u32 pages   (no memory; the pages are shared)
 *   5 owner state    u64 0      u32 length, length + 16 bytes sealed like private pages
 * end    : u8 0, u64 records, then 32 + 16 bytes: the SHA-256 of everything before, sealed
 * </pre>
 * Sealing: AES-256-GCM, IV = the first 4 bytes of streamId and the record's number (u64),
 * AAD = streamId, kind, offset; so a sealed record opens only in its own place of its own
 * stream. Shared records are authenticated by the sealed digest at the end.
 */
public final class Snapshot {
    static final byte[] MAGIC = "GMEMSNAP".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    /** The format version written, and the only one read. */
    public static final int VERSION = 2;
    private static final int END = 0;
    private static final int SHARED = 1;
    private static final int PRIVATE = 2;
    private static final int PRIVATE_HOLE = 3;
    private static final int SHARED_HOLE = 4;
    private static final int STATE = 5;
    private static final int TAG_BYTES = 16;
    /**
     * Bytes of one page record at most: large runs travel in pieces so a record never needs
     * much heap. 64 KiB rather than 1 MiB: in a fresh JVM, AES-GCM gets its compiled intrinsic
     * only after enough calls, and smaller records make more calls for the same bytes.
     */
    static final int CHUNK = 1 << 16;
    /** Owner state records at most: a VM's vCPUs are a few KiB each. */
    static final int MAX_STATE = 16 << 20;

    private Snapshot() {
    }

    /** Remembers the streams already restored, so that none is applied twice. */
    public static final class ReplayGuard {
        private final Set<String> seen = ConcurrentHashMap.newKeySet();

        /** A guard that has seen no stream yet; keep one per receiving owner. */
        public ReplayGuard() {
        }

        boolean seen(byte[] streamId) {
            return seen.contains(HexFormat.of().formatHex(streamId));
        }

        boolean firstTime(byte[] streamId) {
            return seen.add(HexFormat.of().formatHex(streamId));
        }
    }

    /**
     * Writes every allocated page of the file to {@code out}, a finished stream.
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
        Writer writer = writer(owners, key, out);
        writer.writeAll();
        writer.finish();
        return writer.pageBytes();
    }

    /**
     * Reads a finished stream into a file that holds no memory yet and is of the stream's size.
     *
     * @throws GuestMemoryException {@code EBADMSG} for a truncated, corrupted or wrong-key
     *                              stream or an unknown version, {@code EALREADY} for a stream
     *                              already restored, {@code EINVAL} for a file of another size or
     *                              one that is not empty; in every case the file is as before
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
        reader(key, in, replays).restore(owners, state -> {
            throw new GuestMemoryException(Errno.EBADMSG, "restore", "the stream carries owner state; read it with a Reader", -1);
        });
    }

    /** Starts a stream: writes its header. */
    public static Writer writer(List<Binding> owners, SecretKey key, OutputStream out) throws IOException {
        return new Writer(owners, key, out);
    }

    /**
     * Starts reading a stream: reads and checks its header.
     *
     * @throws GuestMemoryException {@code EBADMSG} for another format or version, or a stream
     *                              that ends early; {@code EALREADY} for one already restored
     */
    public static Reader reader(SecretKey key, InputStream in, ReplayGuard replays) throws IOException {
        return new Reader(key, in, replays);
    }

    /**
     * Writes one stream. Not thread-safe: one thread sends, while the file's guest may go on
     * running (a page it changes meanwhile must be sent again, as pre-copy does).
     */
    public static final class Writer {
        private final List<Binding> owners;
        private final GuestMemory memory;
        private final SecretKey key;
        private final OutputStream raw;
        private final MessageDigest digest = sha256();
        private final DataOutputStream data;
        private final byte[] streamId = new byte[16];
        private final byte[] buffer;
        private long records;
        private long pageBytes;
        private boolean finished;

        private Writer(List<Binding> owners, SecretKey key, OutputStream out) throws IOException {
            this.owners = List.copyOf(owners);
            this.memory = owners.getFirst().memory();
            requireWhole(owners, "snapshot");
            this.key = key;
            this.raw = out;
            this.data = new DataOutputStream(new DigestOutputStream(out, digest));
            this.buffer = new byte[(int) Math.min(CHUNK, memory.size())];
            new SecureRandom().nextBytes(streamId);
            data.write(MAGIC);
            data.writeInt(VERSION);
            data.writeLong(memory.size());
            data.writeInt((int) GuestMemory.PAGE_SIZE);
            data.write(streamId);
        }

        /** Writes the owner's own state (vCPU registers, a machine's description), sealed. */
        public void writeState(byte[] state) throws IOException {
            if (state.length > MAX_STATE) {
                throw new GuestMemoryException(Errno.EINVAL, "writeState", "owner state over " + MAX_STATE + " bytes", -1);
            }
            data.writeByte(STATE);
            data.writeLong(0);
            data.writeInt(state.length);
            data.write(seal(key, streamId, records++, STATE, 0, state, state.length));
        }

        /**
         * Writes every page of the file: allocated ones with their bytes, holes as their
         * attribute.
         *
         * @return the page bytes written
         */
        public long writeAll() throws IOException {
            long before = pageBytes;
            for (PageRun run : memory.pageRuns()) {
                writeRun(run, run.offset(), run.offset() + run.length());
            }
            return pageBytes - before;
        }

        /**
         * Writes the pages whose indexes (file offset / page size) are set, each in the state it
         * is in now.
         *
         * @return the page bytes written
         */
        public long writePages(BitSet pages) throws IOException {
            long before = pageBytes;
            if (pages.isEmpty()) {
                return 0;
            }
            for (PageRun run : memory.pageRuns()) {
                long first = run.offset() / GuestMemory.PAGE_SIZE;
                long end = (run.offset() + run.length()) / GuestMemory.PAGE_SIZE;
                for (int p = pages.nextSetBit((int) first); p >= 0 && p < end; ) {
                    int stop = (int) Math.min(end, pages.nextClearBit(p));
                    writeRun(run, p * GuestMemory.PAGE_SIZE, stop * GuestMemory.PAGE_SIZE);
                    p = pages.nextSetBit(stop);
                }
            }
            return pageBytes - before;
        }

        /** Writes {@code [from, to)} of a run as the run's state. */
        private void writeRun(PageRun run, long from, long to) throws IOException {
            if (!run.allocated()) {
                data.writeByte(run.attribute() == Attribute.PRIVATE ? PRIVATE_HOLE : SHARED_HOLE);
                data.writeLong(from);
                data.writeInt(Math.toIntExact((to - from) / GuestMemory.PAGE_SIZE));
                records++;
                return;
            }
            for (long at = from; at < to; ) {
                Binding owner = ownerOf(owners, at);
                int length = (int) Math.min(Math.min(CHUNK, to - at), owner.offset() + owner.length() - at);
                MemorySegment pages = owner.pages().asSlice(at - owner.offset(), length);
                MemorySegment into = MemorySegment.ofArray(buffer).asSlice(0, length);
                boolean sealed = run.attribute() == Attribute.PRIVATE;
                if (!sealed && !memory.copyIfShared(pages, at, into)) {
                    // A page of it was converted to private since the runs were read: its bytes
                    // must not travel in the clear (the conversion is in the change log, so the
                    // next round sends it sealed), but the pages around it still must go now.
                    writeSharedPageByPage(owner, at, length);
                    at += length;
                    continue;
                }
                if (sealed) {
                    into.copyFrom(pages);
                }
                data.writeByte(sealed ? PRIVATE : SHARED);
                data.writeLong(at);
                data.writeInt(length);
                if (sealed) {
                    data.write(seal(key, streamId, records, PRIVATE, at, buffer, length));
                    Arrays.fill(buffer, 0, length, (byte) 0);  // private bytes do not linger on the heap
                } else {
                    data.write(buffer, 0, length);
                }
                records++;
                pageBytes += length;
                at += length;
            }
        }

        /** Writes each page of {@code [at, at + length)} that is shared now, one record each. */
        private void writeSharedPageByPage(Binding owner, long at, int length) throws IOException {
            int page = (int) GuestMemory.PAGE_SIZE;
            MemorySegment into = MemorySegment.ofArray(buffer).asSlice(0, page);
            for (long p = at; p < at + length; p += page) {
                if (!memory.copyIfShared(owner.pages().asSlice(p - owner.offset(), page), p, into)) {
                    continue;
                }
                data.writeByte(SHARED);
                data.writeLong(p);
                data.writeInt(page);
                data.write(buffer, 0, page);
                records++;
                pageBytes += page;
            }
        }

        /** {@return the page bytes written so far} */
        public long pageBytes() {
            return pageBytes;
        }

        /** Writes the end record and the sealed digest, and flushes. */
        public void finish() throws IOException {
            if (finished) {
                return;
            }
            finished = true;
            data.writeByte(END);
            data.writeLong(records);
            data.flush();
            byte[] sum = digest.digest();
            raw.write(seal(key, streamId, Long.MAX_VALUE, END, records, sum, sum.length));
            raw.flush();
        }

        /** Flushes what was written, for a receiver that applies as it reads. */
        public void flush() throws IOException {
            data.flush();
        }
    }

    /**
     * Reads one stream and applies it as it goes; on any failure it undoes what it applied, so
     * the file ends as it began.
     */
    public static final class Reader {
        private final SecretKey key;
        private final InputStream raw;
        private final ReplayGuard replays;
        private final MessageDigest digest = sha256();
        private final DataInputStream data;
        private final byte[] streamId = new byte[16];
        private final long fileSize;
        private long records;
        private String op = "restore";

        private Reader(SecretKey key, InputStream in, ReplayGuard replays) throws IOException {
            this.key = key;
            this.raw = in;
            this.replays = replays;
            this.data = new DataInputStream(new DigestInputStream(in, digest));
            try {
                byte[] magic = new byte[MAGIC.length];
                data.readFully(magic);
                if (!Arrays.equals(magic, MAGIC)) {
                    throw bad(op, "not a guestmemfd snapshot");
                }
                int version = data.readInt();
                if (version != VERSION) {
                    throw bad(op, "stream version " + version + ", this library reads " + VERSION);
                }
                fileSize = data.readLong();
                int pageSize = data.readInt();
                data.readFully(streamId);
                if (pageSize != GuestMemory.PAGE_SIZE || fileSize <= 0 || fileSize % GuestMemory.PAGE_SIZE != 0) {
                    throw bad(op, "the stream is of " + pageSize + "-byte pages and a " + fileSize + "-byte file");
                }
            } catch (EOFException truncated) {
                throw bad(op, "the stream ends early");
            }
            if (replays.seen(streamId)) {
                throw alreadyRestored();
            }
        }

        /** {@return the size of the file the stream was taken from} */
        public long fileSize() {
            return fileSize;
        }

        /**
         * Reads the next record, which must be owner state, as a sender writes it before any
         * page (a machine's description, so that the receiver can build the machine).
         *
         * @throws GuestMemoryException {@code EBADMSG} when it is not, does not open, or is cut
         */
        public byte[] readState() throws IOException {
            try {
                int kind = data.readUnsignedByte();
                if (kind != STATE) {
                    throw bad(op, "record " + records + " is not the owner state expected");
                }
                return readStateBody();
            } catch (EOFException truncated) {
                throw bad(op, "the stream ends early");
            }
        }

        private byte[] readStateBody() throws IOException {
            long offset = data.readLong();
            int length = data.readInt();
            if (offset != 0 || length < 0 || length > MAX_STATE) {
                throw bad(op, "record " + records + " is malformed");
            }
            byte[] body = new byte[length + TAG_BYTES];
            data.readFully(body);
            return open(key, streamId, records++, STATE, 0, body, op);
        }

        /**
         * Applies every record to a file of the stream's size that holds no memory yet, handing
         * owner state records to {@code states} in order, then checks the end.
         *
         * @throws GuestMemoryException {@code EBADMSG} for a truncated, corrupted or wrong-key
         *                              stream, {@code EALREADY} for a replayed one, {@code EINVAL}
         *                              for a file of another size or one that is not empty; and
         *                              whatever {@code states} throws. In every case what was
         *                              applied is undone first.
         */
        public void restore(List<Binding> owners, Consumer<byte[]> states) throws IOException {
            GuestMemory memory = owners.getFirst().memory();
            requireWhole(owners, "restore");
            op = "restore(size=" + memory.size() + ")";
            if (fileSize != memory.size()) {
                throw new GuestMemoryException(Errno.EINVAL, op, "the stream is of a " + fileSize + "-byte file", -1);
            }
            if (fileSize / GuestMemory.PAGE_SIZE > Integer.MAX_VALUE) {
                throw new GuestMemoryException(Errno.EFBIG, op, "restore tracks written pages with an int index: files up to 8 TiB", -1);
            }
            List<PageRun> before = memory.pageRuns();
            if (before.stream().anyMatch(PageRun::allocated)) {
                throw new GuestMemoryException(Errno.EINVAL, op, "the target file already holds memory", -1);
            }
            BitSet written = new BitSet();
            try {
                apply(owners, memory, written, states);
            } catch (EOFException truncated) {
                undo(memory, before, written, bad(op, "the stream ends early"));
            } catch (IOException | RuntimeException e) {
                undo(memory, before, written, e);
            }
        }

        private void apply(List<Binding> owners, GuestMemory memory, BitSet written, Consumer<byte[]> states)
                throws IOException {
            byte[] buffer = new byte[CHUNK + TAG_BYTES];
            while (true) {
                int kind = data.readUnsignedByte();
                if (kind == END) {
                    checkEnd();
                    return;
                }
                if (kind == STATE) {
                    states.accept(readStateBody());
                    continue;
                }
                long offset = data.readLong();
                int length = data.readInt();
                if (kind == PRIVATE_HOLE || kind == SHARED_HOLE) {
                    long bytes = (long) length * GuestMemory.PAGE_SIZE;
                    if (length <= 0 || offset < 0 || offset % GuestMemory.PAGE_SIZE != 0 || offset > fileSize - bytes) {
                        throw bad(op, "record " + records + " is malformed");
                    }
                    int first = (int) (offset / GuestMemory.PAGE_SIZE);
                    int next = written.nextSetBit(first);
                    if (next >= 0 && next < first + length) {
                        memory.punchHole(offset, bytes);  // sent earlier, freed since
                        written.clear(first, first + length);
                    }
                    memory.convert(offset, bytes, kind == PRIVATE_HOLE ? Attribute.PRIVATE : Attribute.SHARED, Content.ZERO);
                    records++;
                    continue;
                }
                if ((kind != SHARED && kind != PRIVATE) || length <= 0 || length > CHUNK || offset < 0
                        || offset % GuestMemory.PAGE_SIZE != 0 || length % GuestMemory.PAGE_SIZE != 0
                        || offset > fileSize - length) {
                    throw bad(op, "record " + records + " is malformed");
                }
                Binding owner = ownerOf(owners, offset);
                if (offset + length > owner.offset() + owner.length()) {
                    throw bad(op, "record " + records + " crosses the end of a binding");
                }
                int bodyLength = kind == PRIVATE ? length + TAG_BYTES : length;
                data.readFully(buffer, 0, bodyLength);
                byte[] plain = kind == PRIVATE
                        ? open(key, streamId, records, PRIVATE, offset, Arrays.copyOf(buffer, bodyLength), op)
                        : buffer;
                // PRESERVE: the record overwrites every byte of its pages, so zeroing them first
                // (a punch per record) would only cost time.
                memory.convert(offset, length, kind == PRIVATE ? Attribute.PRIVATE : Attribute.SHARED, Content.PRESERVE);
                MemorySegment.copy(MemorySegment.ofArray(plain), 0, owner.pages(), offset - owner.offset(), length);
                written.set((int) (offset / GuestMemory.PAGE_SIZE), (int) ((offset + length) / GuestMemory.PAGE_SIZE));
                if (kind == PRIVATE) {
                    Arrays.fill(plain, (byte) 0);  // private bytes do not linger on the heap
                }
                records++;
            }
        }

        private void checkEnd() throws IOException {
            long count = data.readLong();
            byte[] expected = digest.digest();
            byte[] trailer = new byte[32 + TAG_BYTES];
            new DataInputStream(raw).readFully(trailer);
            byte[] sealedDigest = open(key, streamId, Long.MAX_VALUE, END, count, trailer, op);
            if (count != records || !MessageDigest.isEqual(sealedDigest, expected)) {
                throw bad(op, "the stream was altered (its authenticated digest does not match)");
            }
            if (!replays.firstTime(streamId)) {
                throw alreadyRestored();
            }
        }

        /** Frees what was written and puts the attributes back, then throws {@code cause}. */
        private void undo(GuestMemory memory, List<PageRun> before, BitSet written, Exception cause) throws IOException {
            try {
                if (!written.isEmpty()) {
                    memory.punchHole(0, memory.size());
                }
                for (PageRun run : before) {
                    memory.convert(run.offset(), run.length(), run.attribute(), Content.ZERO);
                }
            } catch (RuntimeException failed) {
                cause.addSuppressed(failed);
            }
            if (cause instanceof IOException io) {
                throw io;
            }
            throw (RuntimeException) cause;
        }

        /**
         * Reads the rest of the stream without applying it: checks every record as
         * {@link #restore} does, opens every sealed one and checks the end, but needs no target
         * file and marks nothing in the replay guard. For checking a snapshot file on a host that
         * could not restore it.
         *
         * @param states told each owner state record, opened, in order
         * @return what the stream holds
         * @throws GuestMemoryException {@code EBADMSG} for a truncated, corrupted or wrong-key
         *                              stream, {@code EFBIG} for a file over 8 TiB
         */
        public SnapshotContents verify(Consumer<byte[]> states) throws IOException {
            op = "verify";
            long pages = fileSize / GuestMemory.PAGE_SIZE;
            if (pages > Integer.MAX_VALUE) {
                throw new GuestMemoryException(Errno.EFBIG, op, "pages are tracked with an int index: files up to 8 TiB", -1);
            }
            BitSet recorded = new BitSet();
            BitSet allocated = new BitSet();
            BitSet privates = new BitSet();
            long sharedBytes = 0;
            long privateBytes = 0;
            long stateBytes = 0;
            int stateRecords = 0;
            int rounds = 0;
            long lastOffset = Long.MAX_VALUE;
            byte[] buffer = new byte[CHUNK + TAG_BYTES];
            try {
                while (true) {
                    int kind = data.readUnsignedByte();
                    if (kind == END) {
                        checkDigest();
                        break;
                    }
                    if (kind == STATE) {
                        byte[] state = readStateBody();
                        stateRecords++;
                        stateBytes += state.length;
                        states.accept(state);
                        continue;
                    }
                    long offset = data.readLong();
                    int length = data.readInt();
                    long bytes;
                    if (kind == PRIVATE_HOLE || kind == SHARED_HOLE) {
                        bytes = (long) length * GuestMemory.PAGE_SIZE;
                        if (length <= 0 || offset < 0 || offset % GuestMemory.PAGE_SIZE != 0 || offset > fileSize - bytes) {
                            throw bad(op, "record " + records + " is malformed");
                        }
                    } else {
                        if ((kind != SHARED && kind != PRIVATE) || length <= 0 || length > CHUNK || offset < 0
                                || offset % GuestMemory.PAGE_SIZE != 0 || length % GuestMemory.PAGE_SIZE != 0
                                || offset > fileSize - length) {
                            throw bad(op, "record " + records + " is malformed");
                        }
                        bytes = length;
                        int bodyLength = kind == PRIVATE ? length + TAG_BYTES : length;
                        data.readFully(buffer, 0, bodyLength);
                        if (kind == PRIVATE) {
                            Arrays.fill(open(key, streamId, records, PRIVATE, offset, Arrays.copyOf(buffer, bodyLength), op), (byte) 0);
                            privateBytes += length;
                        } else {
                            sharedBytes += length;
                        }
                    }
                    if (offset <= lastOffset) {
                        rounds++;
                    }
                    lastOffset = offset;
                    int first = (int) (offset / GuestMemory.PAGE_SIZE);
                    int end = (int) ((offset + bytes) / GuestMemory.PAGE_SIZE);
                    recorded.set(first, end);
                    allocated.set(first, end, kind == SHARED || kind == PRIVATE);
                    privates.set(first, end, kind == PRIVATE || kind == PRIVATE_HOLE);
                    records++;
                }
            } catch (EOFException truncated) {
                throw bad(op, "the stream ends early");
            }
            BitSet sharedAllocated = (BitSet) allocated.clone();
            sharedAllocated.andNot(privates);
            BitSet privateAllocated = (BitSet) allocated.clone();
            privateAllocated.and(privates);
            BitSet privateHoles = (BitSet) privates.clone();
            privateHoles.andNot(allocated);
            long sharedHoles = recorded.cardinality() - allocated.cardinality() - privateHoles.cardinality();
            return new SnapshotContents(fileSize, records, rounds, sharedAllocated.cardinality(), privateAllocated.cardinality(),
                    sharedHoles, privateHoles.cardinality(), sharedBytes, privateBytes, stateRecords, stateBytes);
        }

        /** Checks the end's record count and sealed digest, as {@code checkEnd} does, without the replay guard. */
        private void checkDigest() throws IOException {
            long count = data.readLong();
            byte[] expected = digest.digest();
            byte[] trailer = new byte[32 + TAG_BYTES];
            new DataInputStream(raw).readFully(trailer);
            byte[] sealedDigest = open(key, streamId, Long.MAX_VALUE, END, count, trailer, op);
            if (count != records || !MessageDigest.isEqual(sealedDigest, expected)) {
                throw bad(op, "the stream was altered (its authenticated digest does not match)");
            }
        }

        private GuestMemoryException alreadyRestored() {
            return new GuestMemoryException(Errno.EALREADY, op, "stream " + HexFormat.of().formatHex(streamId)
                    + " was already restored (replay)", -1);
        }
    }

    private static void requireWhole(List<Binding> owners, String what) {
        GuestMemory memory = owners.getFirst().memory();
        long covered = 0;
        for (Binding b : owners) {
            if (b.memory() != memory) {
                throw new GuestMemoryException(Errno.EINVAL, what, "the bindings belong to different files", -1);
            }
            covered += b.length();
        }
        if (covered != memory.size()) {
            throw new GuestMemoryException(Errno.EINVAL, what, "the owners' bindings must cover the whole file", -1);
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
        return new GuestMemoryException(Errno.EBADMSG, op, why, -1);
    }

    private static byte[] iv(byte[] streamId, long record) {
        return ByteBuffer.allocate(12).put(streamId, 0, 4).putLong(record).array();
    }

    private static byte[] aad(byte[] streamId, int kind, long offset) {
        return ByteBuffer.allocate(16 + 1 + 8).put(streamId).put((byte) kind).putLong(offset).array();
    }

    private static byte[] seal(SecretKey key, byte[] streamId, long record, int kind, long offset, byte[] plain, int length) {
        try {
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
            c.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(TAG_BYTES * 8, iv(streamId, record)));
            c.updateAAD(aad(streamId, kind, offset));
            return c.doFinal(plain, 0, length);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM: " + e.getMessage(), e);
        }
    }

    private static byte[] open(SecretKey key, byte[] streamId, long record, int kind, long offset, byte[] sealed, String op) {
        try {
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
            c.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BYTES * 8, iv(streamId, record)));
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
}
