package dev.guestmemfd;

import static dev.guestmemfd.SnapshotFormat.CHUNK;
import static dev.guestmemfd.SnapshotFormat.END;
import static dev.guestmemfd.SnapshotFormat.LAYOUT;
import static dev.guestmemfd.SnapshotFormat.MAX_STATE;
import static dev.guestmemfd.SnapshotFormat.PRIVATE;
import static dev.guestmemfd.SnapshotFormat.RECORD_HEADER_BYTES;
import static dev.guestmemfd.SnapshotFormat.SHARED;
import static dev.guestmemfd.SnapshotFormat.STATE;
import static dev.guestmemfd.SnapshotFormat.TAG_BYTES;
import static dev.guestmemfd.SnapshotFormat.TRAILER_BYTES;
import static dev.guestmemfd.SnapshotFormat.TRAILER_RECORD;
import static dev.guestmemfd.SnapshotFormat.bad;

import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.Memfd;
import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.FilterInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.DigestInputStream;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.BooleanSupplier;
import javax.crypto.SecretKey;

/**
 * A snapshot arriving as a stream (a pipe, a socket: read once, front to back) as a
 * {@link PageSource}. A background reader drives the stream to its end and copies every byte it
 * reads into a spool, an unlinked memfd of this process, so any page read so far can be served
 * at once, in any order; a page the stream has not reached yet waits for it.
 *
 * <p>A version 4 stream written in one pass ({@link Snapshot#write}) starts with its layout
 * (sealed), which names each page's final state and promises that each page comes exactly once:
 * the source is ready as soon as the layout is in, a page's first record is its last, and a page
 * record is taken into the index only after its tag checked out (a shared record's own tag, a
 * private record's seal, opened again on each read). A stream without a layout (a pre-copy
 * stream of several rounds, or a version 2 or 3 stream) names a page's final state only at its
 * end: the source is ready only then, and serves from the spool as a snapshot file does.
 *
 * <p>Failing loudly: a stream that is cut, altered, carries bytes after its end or stalls (no
 * byte for the stall timeout while something waits for it) fails the source once; every read
 * waiting and to come, and {@link #verify}, throw that failure ({@code EBADMSG}, or {@code EIO}
 * for a stream that could not be read or stalled) instead of waiting on.
 *
 * @implSpec Thread safe.
 */
final class SnapshotStreamSource implements PageSource {
    private static final int NONE = PageRecordMap.NONE;
    /** How long a waiter sleeps at most before it looks at the clock again. */
    private static final long POLL_NANOS = TimeUnit.MILLISECONDS.toNanos(50);

    private final InputStream raw;
    private final SecretKey key;
    private final Snapshot.ReplayGuard replays;
    private final long stallNanos;
    private final FileChannel spool;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final Thread reader;
    /** When the reader last got a byte from the stream. */
    private volatile long lastProgress = System.nanoTime();
    private volatile boolean closed;

    // Set by the reader before ready, read after it (the lock orders them).
    private byte[] streamId;
    private long fileSize;
    private int version;
    private LayoutPromise promise;
    private final List<byte[]> states = new ArrayList<>();
    /** A stream without a layout, read whole into the spool: a snapshot file from then on. */
    private SnapshotFileSource whole;
    private boolean claimed;

    // The index of a stream with a layout; guarded by lock.
    private PageRecordMap recordOf;
    private final PageRecords records = new PageRecords();
    private boolean ready;
    private boolean ended;
    private RuntimeException failure;

    private SnapshotStreamSource(InputStream in, SecretKey key, Snapshot.ReplayGuard replays, Duration stall)
            throws IOException {
        this.raw = in;
        this.key = key;
        this.replays = replays;
        this.stallNanos = stall.toNanos();
        this.spool = openSpool();
        this.reader = Thread.ofPlatform().daemon().name("gmem-stream-reader").unstarted(this::readStream);
    }

    /**
     * Opens {@code in} as a source: starts the reader and returns once the layout is known (a
     * version 4 one-pass stream: after its layout record; any other stream: at its end).
     *
     * @throws GuestMemoryException {@code EBADMSG} for another format or a stream cut, altered
     *                              or malformed before it was ready; {@code EALREADY} for a stream
     *                              the guard has seen; {@code EIO} when it stalled or could not
     *                              be read; {@code EINVAL} for a null argument or a stall
     *                              timeout that is not positive
     */
    static SnapshotStreamSource open(InputStream in, SecretKey key, Snapshot.ReplayGuard replays, Duration stall)
            throws IOException {
        if (in == null || key == null || replays == null || stall == null || stall.isNegative() || stall.isZero()) {
            throw new GuestMemoryException(Errno.EINVAL, "open", "stream, key, replay guard and a positive stall timeout"
                    + " must be given", -1);
        }
        SnapshotStreamSource source = new SnapshotStreamSource(in, key, replays, stall);
        source.reader.start();
        try {
            source.await(() -> source.ready, "lazyRestore");
        } catch (RuntimeException e) {
            source.forget();
            source.close();
            throw e;
        }
        return source;
    }

    /** An unlinked memfd, opened as a channel: RAM the kernel can page out, gone with the process. */
    private static FileChannel openSpool() throws IOException {
        int fd = Memfd.create("gmem-stream-spool", Memfd.MFD_CLOEXEC);
        try {
            return FileChannel.open(Path.of("/proc/self/fd/" + fd), StandardOpenOption.READ, StandardOpenOption.WRITE);
        } finally {
            Fd.close(fd);
        }
    }

    // ---------------------------------------------------------------- the reader

    /** Counts progress and copies every byte read into the spool, at its stream position. */
    private final class Tee extends FilterInputStream {
        private long at;

        Tee(InputStream in) {
            super(in);
        }

        @Override
        public int read() throws IOException {
            byte[] one = new byte[1];
            int n = read(one, 0, 1);
            return n < 0 ? -1 : one[0] & 0xff;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            int n = in.read(b, off, len);
            if (n > 0) {
                lastProgress = System.nanoTime();
                ByteBuffer bytes = ByteBuffer.wrap(b, off, n);
                while (bytes.hasRemaining()) {
                    at += spool.write(bytes, at);
                }
            }
            return n;
        }
    }

    private void readStream() {
        String op = "lazyRestore";
        Tee tee = new Tee(raw);
        MessageDigest digest = SnapshotFormat.sha256();
        DigestInputStream digested = new DigestInputStream(new BufferedInputStream(tee, CHUNK + TAG_BYTES), digest);
        DataInputStream data = new DataInputStream(digested);
        try {
            SnapshotFormat.Header header = SnapshotFormat.readHeader(data, op);
            streamId = header.streamId();
            fileSize = header.fileSize();
            version = header.version();
            if (fileSize / GuestMemory.PAGE_SIZE > Integer.MAX_VALUE) {
                throw new GuestMemoryException(Errno.EFBIG, op, "pages are indexed with an int: files up to 8 TiB", -1);
            }
            long at = SnapshotFormat.HEADER_BYTES;
            long number = 0;
            while (true) {
                int kind = data.readUnsignedByte();
                if (kind == STATE || kind == LAYOUT && version >= SnapshotFormat.TAGGED_VERSION) {
                    long offset = data.readLong();
                    int length = data.readInt();
                    if (offset != 0 || length < 0 || length > MAX_STATE) {
                        throw bad(op, "record " + number + " is malformed");
                    }
                    byte[] body = new byte[length + TAG_BYTES];
                    data.readFully(body);
                    byte[] plain = SnapshotFormat.open(key, streamId, number, kind, 0, body, body.length, op);
                    number++;
                    at += RECORD_HEADER_BYTES + body.length;
                    if (kind == STATE) {
                        states.add(plain);
                        continue;
                    }
                    promise = new LayoutPromise(SnapshotFormat.decodeLayout(plain, fileSize, op));
                    if (!replays.claim(streamId)) {
                        throw new GuestMemoryException(Errno.EALREADY, op, "the stream was already restored (replay)", -1);
                    }
                    claimed = true;
                    readPages(data, digested, at, number);
                    return;
                }
                // No layout before the first page record: the final state of a page is known at
                // the end only. Read it whole into the spool, then serve it as a file.
                digested.on(false);
                data.transferTo(OutputStreamSink.INSTANCE);
                whole = SnapshotFileSource.open(spool, key, replays);
                lock.lock();
                try {
                    ready = true;
                    ended = true;
                    changed.signalAll();
                } finally {
                    lock.unlock();
                }
                return;
            }
        } catch (EOFException cut) {
            fail(bad(op, "the stream ends early"));
        } catch (GuestMemoryException e) {
            fail(e);
        } catch (IOException | RuntimeException e) {
            fail(new GuestMemoryException(Errno.EIO, op, closed ? "the source was closed"
                    : "the stream could not be read: " + e, -1));
        }
    }

    /** A sink for the bytes of a stream that only need to reach the spool. */
    private static final class OutputStreamSink extends java.io.OutputStream {
        static final OutputStreamSink INSTANCE = new OutputStreamSink();

        @Override
        public void write(int b) {
        }

        @Override
        public void write(byte[] b, int off, int len) {
        }
    }

    /**
     * The records after a layout: each checked against it and, for a shared record, its tag
     * checked, before it enters the index; then the end and its sealed digest.
     */
    private void readPages(DataInputStream data, DigestInputStream digested, long at, long number) throws IOException {
        String op = "lazyRestore";
        lock.lock();
        try {
            recordOf = new PageRecordMap((int) (fileSize / GuestMemory.PAGE_SIZE));
            ready = true;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        byte[] buffer = new byte[CHUNK + TAG_BYTES];
        while (!closed) {
            int kind = data.readUnsignedByte();
            if (kind == END) {
                long count = data.readLong();
                byte[] expected = digest(digested);
                byte[] trailer = new byte[TRAILER_BYTES];
                data.readFully(trailer);
                byte[] sealedDigest = SnapshotFormat.open(key, streamId, TRAILER_RECORD, END, count, trailer, trailer.length, op);
                if (count != number || !MessageDigest.isEqual(sealedDigest, expected)) {
                    throw bad(op, "the stream was altered (its authenticated digest does not match)");
                }
                promise.checkComplete(op);
                if (data.read() >= 0) {
                    throw bad(op, "bytes follow the stream's sealed end");
                }
                lock.lock();
                try {
                    ended = true;
                    changed.signalAll();
                } finally {
                    lock.unlock();
                }
                return;
            }
            long offset = data.readLong();
            int length = data.readInt();
            long body = at + RECORD_HEADER_BYTES;
            if (SnapshotFormat.isHole(kind)) {
                long bytes = (long) length * GuestMemory.PAGE_SIZE;
                if (length <= 0 || offset < 0 || offset % GuestMemory.PAGE_SIZE != 0 || offset > fileSize - bytes) {
                    throw bad(op, "record " + number + " is malformed");
                }
                int first = (int) (offset / GuestMemory.PAGE_SIZE);
                promise.check(number, kind, first, first + length, op);
                at = body;
                number++;
                continue;
            }
            if (!SnapshotFormat.carriesPages(kind) || length <= 0 || length > CHUNK || offset < 0
                    || offset % GuestMemory.PAGE_SIZE != 0 || length % GuestMemory.PAGE_SIZE != 0 || offset > fileSize - length) {
                throw bad(op, "record " + number + " is malformed");
            }
            int first = (int) (offset / GuestMemory.PAGE_SIZE);
            int end = first + length / (int) GuestMemory.PAGE_SIZE;
            promise.check(number, kind, first, end, op);
            int bodyLength = SnapshotFormat.bodyBytes(kind, length, version);
            data.readFully(buffer, 0, bodyLength);
            if (kind == SHARED) {
                // Refused here, before any reader can be handed these bytes; checked again on read.
                SnapshotFormat.checkTag(key, streamId, number, offset, buffer, length, op);
            }
            lock.lock();
            try {
                int r = records.add(body, offset, length, number, kind == PRIVATE);
                recordOf.fill(first, end, r);
                changed.signalAll();
            } finally {
                lock.unlock();
            }
            at = body + bodyLength;
            number++;
        }
        throw new IOException("closed");
    }

    private static byte[] digest(DigestInputStream digested) {
        digested.on(false);  // the trailer is not part of what it seals
        return digested.getMessageDigest().digest();
    }


    // ---------------------------------------------------------------- failing and waiting

    private void fail(RuntimeException cause) {
        lock.lock();
        try {
            if (failure == null && !closed) {
                failure = cause;
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Waits until {@code done} holds, the source failed or was closed, or the stream stalled.
     * The caller holds no lock; {@code done} is read under it.
     */
    private void await(BooleanSupplier done, String op) {
        lock.lock();
        try {
            while (!done.getAsBoolean()) {
                if (failure != null) {
                    throw failed(op);
                }
                if (closed) {
                    throw new GuestMemoryException(Errno.EIO, op, "the stream source was closed", -1);
                }
                long idle = System.nanoTime() - lastProgress;
                if (idle >= stallNanos) {
                    failure = new GuestMemoryException(Errno.EIO, op, "the stream stalled: no byte for "
                            + TimeUnit.NANOSECONDS.toMillis(idle) + " ms", -1);
                    changed.signalAll();
                    closeInput();  // the reader, blocked in a read, gets an error (sockets, pipes)
                    throw failed(op);
                }
                try {
                    changed.awaitNanos(Math.min(POLL_NANOS, stallNanos - idle));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new GuestMemoryException(Errno.EINTR, op, "interrupted while waiting for the stream", -1);
                }
            }
        } finally {
            lock.unlock();
        }
    }

    private GuestMemoryException failed(String op) {
        RuntimeException f = failure;
        if (f instanceof GuestMemoryException g) {
            return g;
        }
        GuestMemoryException e = new GuestMemoryException(Errno.EIO, op, "the stream failed: " + f, -1);
        e.initCause(f);
        return e;
    }

    private void closeInput() {
        try {
            raw.close();
        } catch (IOException ignored) {
            // the stream is given up on either way
        }
    }

    // ---------------------------------------------------------------- PageSource

    @Override
    public long fileSize() {
        return fileSize;
    }

    @Override
    public List<PageRun> layout() {
        return whole != null ? whole.layout() : promise.runs();
    }

    @Override
    public List<byte[]> ownerStates() {
        return whole != null ? whole.ownerStates() : List.copyOf(states);
    }

    /**
     * {@inheritDoc} Waits until the stream names the page's record (a page the layout says holds
     * no bytes needs no wait).
     *
     * @throws GuestMemoryException the source's failure while waiting ({@code EBADMSG},
     *                              {@code EIO}), {@code EINTR} when interrupted
     */
    @Override
    public Extent extent(long offset) {
        if (whole != null) {
            return whole.extent(offset);
        }
        int page = (int) (offset / GuestMemory.PAGE_SIZE);
        if (!promise.allocated(page)) {
            return null;
        }
        await(() -> recordOf.get(page) != NONE, "lazyRestore(offset=" + offset + ")");
        lock.lock();
        try {
            int r = recordOf.get(page);
            return new Extent(records.offset(r), records.length(r));
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void read(Extent extent, MemorySegment into) throws IOException {
        if (whole != null) {
            whole.read(extent, into);
            return;
        }
        String op = "lazyRestore(offset=" + extent.offset() + ")";
        int page = (int) (extent.offset() / GuestMemory.PAGE_SIZE);
        await(() -> recordOf.get(page) != NONE, op);
        long body;
        long offset;
        int length;
        long number;
        boolean isSealed;
        lock.lock();
        try {
            int r = recordOf.get(page);
            body = records.bodyAt(r);
            offset = records.offset(r);
            length = records.length(r);
            number = records.number(r);
            isSealed = records.sealed(r);
        } finally {
            lock.unlock();
        }
        if (extent.offset() < offset || extent.offset() - offset > length - extent.length()) {
            throw new GuestMemoryException(Errno.EINVAL, op, "no record holds these pages", extent.offset());
        }
        int bodyLength = SnapshotFormat.bodyBytes(isSealed ? PRIVATE : SHARED, length, version);
        ByteBuffer bytes = ByteBuffer.allocate(bodyLength);
        try {
            while (bytes.hasRemaining()) {
                if (spool.read(bytes, body + bytes.position()) < 0) {
                    throw bad(op, "the spool ends early");
                }
            }
        } catch (java.nio.channels.ClosedChannelException e) {
            throw new IOException(op + ": the stream source was closed", e);
        }
        byte[] plain;
        if (isSealed) {
            plain = SnapshotFormat.open(key, streamId, number, PRIVATE, offset, bytes.array(), bodyLength, op);
        } else {
            SnapshotFormat.checkTag(key, streamId, number, offset, bytes.array(), length, op);
            plain = bytes.array();
        }
        MemorySegment.copy(plain, (int) (extent.offset() - offset), into, ValueLayout.JAVA_BYTE, 0, (int) extent.length());
        Arrays.fill(plain, (byte) 0);  // private bytes do not linger on the heap
        Arrays.fill(bytes.array(), (byte) 0);
    }

    /**
     * {@inheritDoc} Waits for the stream's end: its record count, its sealed digest, the layout
     * kept, and nothing after it.
     */
    @Override
    public void verify() throws IOException {
        await(() -> ended, "lazyRestore");
        if (whole != null) {
            whole.verify();
        }
    }

    /** Gives the stream back to the replay guard: the restore that claimed it was undone. */
    void forget() {
        if (whole != null) {
            whole.forget();
        } else if (claimed) {
            replays.forget(streamId);
        }
    }

    @Override
    public void close() throws IOException {
        lock.lock();
        try {
            closed = true;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        closeInput();
        if (whole != null) {
            whole.close();
        }
        spool.close();
    }
}
