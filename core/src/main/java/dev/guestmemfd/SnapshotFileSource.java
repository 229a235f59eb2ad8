package dev.guestmemfd;

import static dev.guestmemfd.SnapshotFormat.CHUNK;
import static dev.guestmemfd.SnapshotFormat.END;
import static dev.guestmemfd.SnapshotFormat.MAX_STATE;
import static dev.guestmemfd.SnapshotFormat.PRIVATE;
import static dev.guestmemfd.SnapshotFormat.PRIVATE_HOLE;
import static dev.guestmemfd.SnapshotFormat.RECORD_HEADER_BYTES;
import static dev.guestmemfd.SnapshotFormat.STATE;
import static dev.guestmemfd.SnapshotFormat.TAG_BYTES;
import static dev.guestmemfd.SnapshotFormat.TRAILER_BYTES;
import static dev.guestmemfd.SnapshotFormat.TRAILER_RECORD;
import static dev.guestmemfd.SnapshotFormat.bad;

import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import javax.crypto.SecretKey;

/**
 * A snapshot file as a {@link PageSource}: an index from each page to the last record that
 * names it (so a page sent in several pre-copy rounds is fetched once, with its final bytes),
 * built from the record headers alone. Page bytes are read with positional reads, so any
 * number of threads read at once; a sealed record is opened (its tag checked) on every read,
 * and so is a shared record's tag (version 4). A version 4 file with a layout record has its
 * index checked against that sealed layout at open, so its holes are authenticated up front
 * too. A version 2 or 3 file's shared records and holes are covered only by the sealed digest
 * at the end, which {@link #verify} checks over the whole file, every version.
 */
final class SnapshotFileSource implements PageSource {
    private static final int NONE = PageRecordMap.NONE;

    private final FileChannel channel;
    private final SecretKey key;
    private final byte[] streamId;
    private final long fileSize;
    /** The stream's version: from 4 on, a shared record carries its own tag. */
    private final int version;
    private final Snapshot.ReplayGuard replays;
    /** Per page: the index of the last record naming it with bytes, or {@link #NONE}. */
    private final PageRecordMap recordOf;
    /** Per record with bytes: the file position of its body, its offset, length, number and kind. */
    private final PageRecords records;
    private final List<PageRun> layout;
    private final List<byte[]> states;
    /** Where the end record starts: the digest covers everything before the trailer. */
    private final long trailerAt;
    private final long endCount;
    /** Records in the file, all kinds: what the end record must count. */
    private final long recordCount;

    private SnapshotFileSource(FileChannel channel, SecretKey key, Snapshot.ReplayGuard replays, Index index) {
        this.channel = channel;
        this.key = key;
        this.replays = replays;
        this.streamId = index.streamId;
        this.fileSize = index.fileSize;
        this.version = index.version;
        this.recordOf = index.recordOf;
        this.records = index.records;
        this.layout = index.layout();
        this.states = List.copyOf(index.states);
        this.trailerAt = index.trailerAt;
        this.endCount = index.endCount;
        this.recordCount = index.recordCount;
    }

    static SnapshotFileSource open(Path file, SecretKey key, Snapshot.ReplayGuard replays) throws IOException {
        if (file == null || key == null || replays == null) {
            throw new GuestMemoryException(Errno.EINVAL, "open", "file, key and replay guard must be given", -1);
        }
        return open(FileChannel.open(file, StandardOpenOption.READ), key, replays);
    }

    /** Opens a snapshot stored whole in {@code channel}, which the source then owns (and closes). */
    static SnapshotFileSource open(FileChannel channel, SecretKey key, Snapshot.ReplayGuard replays) throws IOException {
        try {
            Index index = new Index(channel, key);
            if (!replays.claim(index.streamId)) {
                throw new GuestMemoryException(Errno.EALREADY, "lazyRestore", "the stream was already restored (replay)", -1);
            }
            return new SnapshotFileSource(channel, key, replays, index);
        } catch (IOException | RuntimeException e) {
            channel.close();
            throw e;
        }
    }

    /** The record headers of a snapshot file, read once. */
    private static final class Index {
        final byte[] streamId;
        final long fileSize;
        final int version;
        final PageRecordMap recordOf;
        /** The sealed layout, where the stream has one: the records must keep it. */
        LayoutPromise promise;
        final BitSet named = new BitSet();
        final BitSet privateAtEnd = new BitSet();
        final List<byte[]> states = new ArrayList<>();
        final PageRecords records = new PageRecords();
        long trailerAt;
        long endCount;
        long recordCount;

        Index(FileChannel channel, SecretKey key) throws IOException {
            String op = "lazyRestore";
            long size = channel.size();
            ByteBuffer head = ByteBuffer.allocate(SnapshotFormat.HEADER_BYTES);
            readFully(channel, head, 0, op);
            SnapshotFormat.Header header = SnapshotFormat.readHeader(
                    new DataInputStream(new ByteArrayInputStream(head.array())), op);
            streamId = header.streamId();
            fileSize = header.fileSize();
            version = header.version();
            long pages = fileSize / GuestMemory.PAGE_SIZE;
            if (pages > Integer.MAX_VALUE) {
                throw new GuestMemoryException(Errno.EFBIG, op, "pages are indexed with an int: files up to 8 TiB", -1);
            }
            recordOf = new PageRecordMap((int) pages);
            long at = SnapshotFormat.HEADER_BYTES;
            long number = 0;
            // Direct: the channel reads straight into it, one copy less per record (a fifth of
            // the index's CPU time in a fresh JVM, measured at 1,650 and 14,756 records).
            ByteBuffer recordHeader = ByteBuffer.allocateDirect(RECORD_HEADER_BYTES);
            while (true) {
                if (at >= size) {
                    throw bad(op, "the stream ends early");
                }
                recordHeader.clear();
                int kind;
                if (size - at < RECORD_HEADER_BYTES) {
                    ByteBuffer one = ByteBuffer.allocate(1);
                    readFully(channel, one, at, op);
                    kind = one.get(0) & 0xff;
                    if (kind != END) {
                        throw bad(op, "the stream ends early");
                    }
                    recordHeader.put(0, (byte) END);
                } else {
                    readFully(channel, recordHeader, at, op);
                    kind = recordHeader.get(0) & 0xff;
                }
                if (kind == END) {
                    // u8 0, u64 records, then the sealed digest; nothing after it
                    if (size - at != 1 + 8 + TRAILER_BYTES) {
                        throw bad(op, size - at < 1 + 8 + TRAILER_BYTES ? "the stream ends early" : "bytes follow the stream's sealed end");
                    }
                    ByteBuffer count = ByteBuffer.allocate(8);
                    readFully(channel, count, at + 1, op);
                    endCount = count.getLong(0);
                    recordCount = number;
                    trailerAt = at + 1 + 8;
                    if (promise != null) {
                        promise.checkComplete(op);
                    }
                    return;
                }
                long offset = recordHeader.getLong(1);
                int length = recordHeader.getInt(9);
                long body = at + RECORD_HEADER_BYTES;
                if (SnapshotFormat.isSealedBlob(kind, version)) {
                    if (offset != 0 || length < 0 || length > MAX_STATE || size - body < length + TAG_BYTES
                            || kind == SnapshotFormat.LAYOUT && (promise != null || !named.isEmpty())) {
                        throw bad(op, "record " + number + " is malformed");
                    }
                    ByteBuffer sealedBlob = ByteBuffer.allocate(length + TAG_BYTES);
                    readFully(channel, sealedBlob, body, op);
                    byte[] plain = SnapshotFormat.open(key, streamId, number, kind, 0, sealedBlob.array(), length + TAG_BYTES, op);
                    if (kind == STATE) {
                        states.add(plain);
                    } else {
                        promise = new LayoutPromise(SnapshotFormat.decodeLayout(plain, fileSize, op));
                    }
                    at = body + length + TAG_BYTES;
                } else if (SnapshotFormat.isHole(kind)) {
                    long bytes = (long) length * GuestMemory.PAGE_SIZE;
                    if (length <= 0 || offset < 0 || offset % GuestMemory.PAGE_SIZE != 0 || offset > fileSize - bytes) {
                        throw bad(op, "record " + number + " is malformed");
                    }
                    int first = (int) (offset / GuestMemory.PAGE_SIZE);
                    if (promise != null) {
                        promise.check(number, kind, first, first + length, op);
                    }
                    recordOf.fill(first, first + length, NONE);
                    named.set(first, first + length);
                    privateAtEnd.set(first, first + length, kind == PRIVATE_HOLE);
                    at = body;
                } else if (SnapshotFormat.carriesPages(kind)) {
                    if (length <= 0 || length > CHUNK || offset < 0 || offset % GuestMemory.PAGE_SIZE != 0
                            || length % GuestMemory.PAGE_SIZE != 0 || offset > fileSize - length) {
                        throw bad(op, "record " + number + " is malformed");
                    }
                    int bodyLength = SnapshotFormat.bodyBytes(kind, length, version);
                    if (size - body < bodyLength) {
                        throw bad(op, "the stream ends early");
                    }
                    int r = records.add(body, offset, length, number, kind == PRIVATE);
                    int first = (int) (offset / GuestMemory.PAGE_SIZE);
                    int end = first + length / (int) GuestMemory.PAGE_SIZE;
                    if (promise != null) {
                        promise.check(number, kind, first, end, op);
                    }
                    recordOf.fill(first, end, r);
                    named.set(first, end);
                    privateAtEnd.set(first, end, kind == PRIVATE);
                    at = body + bodyLength;
                } else {
                    throw bad(op, "record " + number + " is malformed");
                }
                number++;
            }
        }


        /** Runs of equal final state over the named pages: allocated where a record's bytes are last. */
        List<PageRun> layout() {
            List<PageRun> runs = new ArrayList<>();
            long page = GuestMemory.PAGE_SIZE;
            for (int p = named.nextSetBit(0); p >= 0; ) {
                boolean priv = privateAtEnd.get(p);
                boolean allocated = recordOf.get(p) != NONE;
                int end = p + 1;
                while (end < recordOf.pages() && named.get(end) && privateAtEnd.get(end) == priv
                        && (recordOf.get(end) != NONE) == allocated) {
                    end++;
                }
                runs.add(new PageRun(p * page, (end - p) * page, priv ? Attribute.PRIVATE : Attribute.SHARED, allocated));
                p = named.nextSetBit(end);
            }
            return runs;
        }
    }

    private static void readFully(FileChannel channel, ByteBuffer into, long at, String op) throws IOException {
        while (into.hasRemaining()) {
            int n = channel.read(into, at + into.position());
            if (n < 0) {
                throw bad(op, "the stream ends early");
            }
        }
    }

    @Override
    public long fileSize() {
        return fileSize;
    }

    @Override
    public List<PageRun> layout() {
        return layout;
    }

    @Override
    public List<byte[]> ownerStates() {
        return states;
    }

    @Override
    public Extent extent(long offset) {
        int page = (int) (offset / GuestMemory.PAGE_SIZE);
        int r = recordOf.get(page);
        if (r == NONE) {
            return null;
        }
        // The pages around this one whose last record is the same: a later record may have
        // taken some pages of this one over.
        int recordFirst = (int) (records.offset(r) / GuestMemory.PAGE_SIZE);
        int recordEnd = recordFirst + records.length(r) / (int) GuestMemory.PAGE_SIZE;
        int first = page;
        while (first > recordFirst && recordOf.get(first - 1) == r) {
            first--;
        }
        int end = page + 1;
        while (end < recordEnd && recordOf.get(end) == r) {
            end++;
        }
        return new Extent(first * GuestMemory.PAGE_SIZE, (long) (end - first) * GuestMemory.PAGE_SIZE);
    }

    @Override
    public void read(Extent extent, MemorySegment into) throws IOException {
        String op = "lazyRestore(offset=" + extent.offset() + ")";
        int r = recordOf.get((int) (extent.offset() / GuestMemory.PAGE_SIZE));
        if (r == NONE) {
            throw new GuestMemoryException(Errno.EINVAL, op, "no record holds these pages", extent.offset());
        }
        int bodyLength = SnapshotFormat.bodyBytes(records.sealed(r) ? PRIVATE : SnapshotFormat.SHARED, records.length(r), version);
        ByteBuffer body = ByteBuffer.allocate(bodyLength);
        try {
            readFully(channel, body, records.bodyAt(r), op);
        } catch (java.nio.channels.ClosedChannelException closed) {
            throw new IOException(op + ": the snapshot file was closed", closed);
        }
        if (!records.sealed(r) && version >= SnapshotFormat.TAGGED_VERSION) {
            // Checked as read, not at open: the bytes handed on are the ones checked.
            SnapshotFormat.checkTag(key, streamId, records.number(r), records.offset(r), body.array(), records.length(r), op);
        }
        byte[] plain = records.sealed(r)
                ? SnapshotFormat.open(key, streamId, records.number(r), PRIVATE, records.offset(r), body.array(), bodyLength, op)
                : body.array();
        MemorySegment.copy(plain, (int) (extent.offset() - records.offset(r)), into, ValueLayout.JAVA_BYTE, 0, (int) extent.length());
        Arrays.fill(plain, (byte) 0);  // private bytes do not linger on the heap
        if (records.sealed(r)) {
            Arrays.fill(body.array(), (byte) 0);
        }
    }

    @Override
    public void verify() throws IOException {
        String op = "lazyRestore";
        MessageDigest digest = SnapshotFormat.sha256();
        ByteBuffer buffer = ByteBuffer.allocate(1 << 20);
        long at = 0;
        try {
            while (at < trailerAt) {
                buffer.clear().limit((int) Math.min(buffer.capacity(), trailerAt - at));
                int n = channel.read(buffer, at);
                if (n < 0) {
                    throw bad(op, "the stream ends early");
                }
                digest.update(buffer.array(), 0, n);
                at += n;
            }
            ByteBuffer trailer = ByteBuffer.allocate(TRAILER_BYTES);
            readFully(channel, trailer, trailerAt, op);
            byte[] sealedDigest = SnapshotFormat.open(key, streamId, TRAILER_RECORD, END, endCount, trailer.array(),
                    TRAILER_BYTES, op);
            if (endCount != recordCount || !MessageDigest.isEqual(sealedDigest, digest.digest())) {
                throw bad(op, "the stream was altered (its authenticated digest does not match)");
            }
        } catch (java.nio.channels.ClosedChannelException closed) {
            throw new IOException(op + ": the snapshot file was closed", closed);
        } catch (EOFException cut) {
            throw bad(op, "the stream ends early");
        }
    }

    /** Gives the stream back to the replay guard: the restore that claimed it was undone. */
    void forget() {
        replays.forget(streamId);
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
