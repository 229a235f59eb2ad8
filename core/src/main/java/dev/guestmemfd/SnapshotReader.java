package dev.guestmemfd;

import static dev.guestmemfd.SnapshotFormat.CHUNK;
import static dev.guestmemfd.SnapshotFormat.END;
import static dev.guestmemfd.SnapshotFormat.MAX_STATE;
import static dev.guestmemfd.SnapshotFormat.PRIVATE;
import static dev.guestmemfd.SnapshotFormat.PRIVATE_HOLE;
import static dev.guestmemfd.SnapshotFormat.STATE;
import static dev.guestmemfd.SnapshotFormat.TAG_BYTES;
import static dev.guestmemfd.SnapshotFormat.TRAILER_BYTES;
import static dev.guestmemfd.SnapshotFormat.TRAILER_RECORD;
import static dev.guestmemfd.SnapshotFormat.bad;

import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.security.DigestInputStream;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.HexFormat;
import java.util.List;
import java.util.function.Consumer;
import javax.crypto.SecretKey;

/**
 * Reads one stream of {@link SnapshotFormat} into an empty file, staged: every page of the
 * target is held private while the records are applied, so host code sees none of them;
 * only once the stream's end has checked out (record count, sealed digest, nothing after the
 * trailer) are the pages whose final state is shared converted back, holding their final
 * bytes. On any failure it undoes what it did, so the file ends as it began.
 *
 * <p>Why staged: a stream may carry a page sealed and later in the clear (a pre-copy round
 * after the guest shared it), and a cut or forged stream is known bad only at its end.
 * Converting a page to shared when its record arrives would show the host whatever the page
 * held before the record's bytes landed (the earlier private plaintext), or bytes of a stream
 * that is then refused.
 */
final class SnapshotReader implements Snapshot.Reader {
    private final SecretKey key;
    private final InputStream raw;
    private final Snapshot.ReplayGuard replays;
    private final Snapshot.Framing framing;
    private final MessageDigest digest = SnapshotFormat.sha256();
    private final DataInputStream data;
    private final byte[] streamId;
    private final long fileSize;
    /** The stream's format version: a version 2 stream has no poisoned records. */
    private final int version;
    private long records;
    private boolean restoring;
    private String op = "restore";

    SnapshotReader(SecretKey key, InputStream in, Snapshot.ReplayGuard replays, Snapshot.Framing framing)
            throws IOException {
        if (key == null || in == null || replays == null || framing == null) {
            throw new GuestMemoryException(Errno.EINVAL, op, "key, stream, replay guard and framing must be given", -1);
        }
        this.key = key;
        this.raw = in;
        this.replays = replays;
        this.framing = framing;
        this.data = new DataInputStream(new DigestInputStream(in, digest));
        SnapshotFormat.Header header;
        try {
            header = SnapshotFormat.readHeader(data, op);
        } catch (EOFException truncated) {
            throw bad(op, "the stream ends early");
        }
        this.fileSize = header.fileSize();
        this.version = header.version();
        this.streamId = header.streamId();
        if (replays.seen(streamId)) {
            throw alreadyRestored();
        }
    }

    @Override
    public long fileSize() {
        return fileSize;
    }

    @Override
    public byte[] readState() throws IOException {
        if (restoring) {
            throw new GuestMemoryException(Errno.EINVAL, "readState", "the stream was handed to restore", -1);
        }
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
        return SnapshotFormat.open(key, streamId, records++, STATE, 0, body, body.length, op);
    }

    @Override
    public void restore(List<Binding> owners, Consumer<byte[]> states) throws IOException {
        if (restoring) {
            throw new GuestMemoryException(Errno.EINVAL, "restore", "this reader already restored its stream", -1);
        }
        BindingCover target = BindingCover.of(owners, "restore");
        if (states == null) {
            throw new GuestMemoryException(Errno.EINVAL, "restore", "no receiver of owner state given", -1);
        }
        GuestMemory memory = target.memory();
        op = "restore(size=" + memory.size() + ")";
        if (fileSize != memory.size()) {
            throw new GuestMemoryException(Errno.EINVAL, op, "the stream is of a " + fileSize + "-byte file", -1);
        }
        if (fileSize / GuestMemory.PAGE_SIZE > Integer.MAX_VALUE) {
            throw new GuestMemoryException(Errno.EFBIG, op, "restore tracks pages with an int index: files up to 8 TiB", -1);
        }
        List<PageRun> before = memory.pageRuns();
        requireEmpty(target, before);
        restoring = true;
        hold(memory, before);
        Staged staged = new Staged();
        try {
            List<byte[]> stateRecords = apply(target, staged);
            if (!replays.claim(streamId)) {
                throw alreadyRestored();
            }
            try {
                for (byte[] state : stateRecords) {
                    states.accept(state);
                }
                publish(memory, before, staged);
            } catch (RuntimeException e) {
                replays.forget(streamId);  // not restored after all: the stream may be applied again
                throw e;
            }
        } catch (EOFException truncated) {
            undo(memory, before, staged, bad(op, "the stream ends early"));
        } catch (IOException | RuntimeException e) {
            undo(memory, before, staged, e);
        }
    }

    /**
     * Refuses a target that holds data. Empty means every page is a hole; on a backing that
     * cannot free part of a file (memfd_secret), a page that reads zero counts as a hole, as
     * that is what a punch leaves there: so a target whose restore was refused and undone is
     * empty again on every backing.
     */
    private void requireEmpty(BindingCover target, List<PageRun> before) {
        GuestMemory memory = target.memory();
        for (PageRun run : before) {
            if (run.allocated() && (memory.returnsPunchedMemory() || !target.readsZero(run.offset(), run.length()))) {
                throw new GuestMemoryException(Errno.EINVAL, op, "the target file already holds memory (at offset "
                        + run.offset() + ")", run.offset());
            }
        }
    }

    /**
     * Makes every page private before the first record lands, so that no record's bytes are
     * ever reachable by host code until the stream has checked out. The file is empty, so the
     * content mode has nothing to keep or clear: UNSPECIFIED, the one every owner accepts
     * towards private; a refusal (a pin, an owner) changes nothing.
     */
    private static void hold(GuestMemory memory, List<PageRun> before) {
        if (before.stream().anyMatch(run -> run.attribute() == Attribute.SHARED)) {
            memory.convert(0, memory.size(), Attribute.PRIVATE, Content.UNSPECIFIED);
        }
    }

    /** What the records did to the held file, by page index. */
    private static final class Staged {
        /** Pages holding bytes written by a record (holes punch them again). */
        final BitSet written = new BitSet();
        /** Pages some record named: their final attribute is in {@link #privateAtEnd}. */
        final BitSet named = new BitSet();
        /** Of the named pages, those whose last record marked them poisoned (kept until a later record names them). */
        final BitSet poisoned = new BitSet();
        /** Of the named pages, those whose last record made them private. */
        final BitSet privateAtEnd = new BitSet();
        long sharedBytes;
        long privateBytes;
        /** Passes over the file: a pass ends where a record goes back to a lower offset. */
        int rounds;
        long lastOffset = Long.MAX_VALUE;
        /** The stream's layout, once read: the records after it must keep it. */
        LayoutPromise promise;

        void recorded(long offset) {
            if (offset <= lastOffset) {
                rounds++;
            }
            lastOffset = offset;
        }
    }

    /**
     * Applies every record to the held file, or with no target only checks it, and checks the
     * end; {@return the owner state records, in order}
     */
    private List<byte[]> apply(BindingCover target, Staged staged) throws IOException {
        GuestMemory memory = target == null ? null : target.memory();
        List<byte[]> states = new ArrayList<>();
        byte[] buffer = new byte[CHUNK + TAG_BYTES];
        while (true) {
            int kind = data.readUnsignedByte();
            if (kind == END) {
                checkEnd();
                if (staged.promise != null) {
                    staged.promise.checkComplete(op);
                }
                return states;
            }
            if (kind == STATE) {
                states.add(readStateBody());
                continue;
            }
            if (kind == SnapshotFormat.LAYOUT && version >= SnapshotFormat.TAGGED_VERSION) {
                readLayout(staged);
                continue;
            }
            long offset = data.readLong();
            int length = data.readInt();
            if (staged.promise != null && SnapshotFormat.isMark(kind, version)) {
                throw bad(op, "record " + records + " is not a page record, after the layout");
            }
            if (SnapshotFormat.isMark(kind, version)) {
                // The failed pages: named by the hole record just before, which gave their attribute.
                long bytes = (long) length * GuestMemory.PAGE_SIZE;
                if (length <= 0 || offset < 0 || offset % GuestMemory.PAGE_SIZE != 0 || offset > fileSize - bytes) {
                    throw bad(op, "record " + records + " is malformed");
                }
                int first = (int) (offset / GuestMemory.PAGE_SIZE);
                if (staged.named.nextClearBit(first) < first + length) {
                    throw bad(op, "record " + records + " marks pages poisoned that no record named");
                }
                staged.poisoned.set(first, first + length);
                records++;
                continue;
            }
            if (SnapshotFormat.isHole(kind)) {
                long bytes = (long) length * GuestMemory.PAGE_SIZE;
                if (length <= 0 || offset < 0 || offset % GuestMemory.PAGE_SIZE != 0 || offset > fileSize - bytes) {
                    throw bad(op, "record " + records + " is malformed");
                }
                int first = (int) (offset / GuestMemory.PAGE_SIZE);
                int end = first + length;
                if (staged.promise != null) {
                    staged.promise.check(records, kind, first, end, op);
                }
                punchWritten(memory, staged.written, first, end);  // sent earlier, freed since
                staged.recorded(offset);
                staged.named.set(first, end);
                staged.poisoned.clear(first, end);
                staged.privateAtEnd.set(first, end, kind == PRIVATE_HOLE);
                records++;
                continue;
            }
            if (!SnapshotFormat.carriesPages(kind) || length <= 0 || length > CHUNK || offset < 0
                    || offset % GuestMemory.PAGE_SIZE != 0 || length % GuestMemory.PAGE_SIZE != 0
                    || offset > fileSize - length) {
                throw bad(op, "record " + records + " is malformed");
            }
            int bodyLength = SnapshotFormat.bodyBytes(kind, length, version);
            if (staged.promise != null) {
                staged.promise.check(records, kind, (int) (offset / GuestMemory.PAGE_SIZE),
                        (int) ((offset + length) / GuestMemory.PAGE_SIZE), op);
            }
            data.readFully(buffer, 0, bodyLength);
            if (kind != PRIVATE && version >= SnapshotFormat.TAGGED_VERSION) {
                SnapshotFormat.checkTag(key, streamId, records, offset, buffer, length, op);
            }
            byte[] plain = kind == PRIVATE
                    ? SnapshotFormat.open(key, streamId, records, PRIVATE, offset, buffer, bodyLength, op)
                    : buffer;
            // Every page is private until publish: the bytes land where host code cannot reach
            // them, whatever the record's kind, and whatever an earlier record put there.
            if (target != null) {
                target.copyIn(offset, plain, length);
            }
            if (kind == PRIVATE) {
                staged.privateBytes += length;
            } else {
                staged.sharedBytes += length;
            }
            staged.recorded(offset);
            if (kind == PRIVATE) {
                Arrays.fill(plain, (byte) 0);  // private bytes do not linger on the heap
            }
            int first = (int) (offset / GuestMemory.PAGE_SIZE);
            int end = (int) ((offset + length) / GuestMemory.PAGE_SIZE);
            staged.written.set(first, end);
            staged.named.set(first, end);
            staged.poisoned.clear(first, end);  // punched and refilled since it failed
            staged.privateAtEnd.set(first, end, kind == PRIVATE);
            records++;
        }
    }

    /**
     * Reads a layout record (version 4): sealed, at most one, before any page record; the
     * records after it must keep it, which {@link LayoutPromise} checks as they arrive.
     */
    private void readLayout(Staged staged) throws IOException {
        long offset = data.readLong();
        int length = data.readInt();
        if (offset != 0 || length < 0 || length > MAX_STATE || staged.promise != null || !staged.named.isEmpty()) {
            throw bad(op, "record " + records + " is malformed");
        }
        byte[] body = new byte[length + TAG_BYTES];
        data.readFully(body);
        byte[] plain = SnapshotFormat.open(key, streamId, records++, SnapshotFormat.LAYOUT, 0, body, body.length, op);
        staged.promise = new LayoutPromise(SnapshotFormat.decodeLayout(plain, fileSize, op));
    }

    /** Checks the end record, the sealed digest, and that nothing follows it. */
    private void checkEnd() throws IOException {
        long count = data.readLong();
        byte[] expected = digest.digest();
        byte[] trailer = new byte[TRAILER_BYTES];
        new DataInputStream(raw).readFully(trailer);
        byte[] sealedDigest = SnapshotFormat.open(key, streamId, TRAILER_RECORD, END, count, trailer, trailer.length, op);
        if (count != records || !MessageDigest.isEqual(sealedDigest, expected)) {
            throw bad(op, "the stream was altered (its authenticated digest does not match)");
        }
        if (framing == Snapshot.Framing.WHOLE_INPUT && raw.read() >= 0) {
            throw bad(op, "bytes follow the stream's sealed end");
        }
    }

    /**
     * Converts each run of pages whose final state is shared back to shared, keeping the bytes
     * their last record wrote (or zero: a hole). A page's final state is its last record's, or
     * for a page no record named, what it was before the restore.
     */
    private static void publish(GuestMemory memory, List<PageRun> before, Staged staged) {
        int pages = (int) (memory.size() / GuestMemory.PAGE_SIZE);
        int runStart = -1;
        int beforeRun = 0;
        for (int p = 0; p < pages; ) {
            boolean shared;
            int end;
            if (staged.named.get(p)) {
                boolean isPrivate = staged.privateAtEnd.get(p);
                shared = !isPrivate;
                end = Math.min(staged.named.nextClearBit(p),
                        isPrivate ? staged.privateAtEnd.nextClearBit(p) : nextSetOr(staged.privateAtEnd, p, pages));
            } else {
                while (before.get(beforeRun).offset() + before.get(beforeRun).length() <= (long) p * GuestMemory.PAGE_SIZE) {
                    beforeRun++;
                }
                PageRun run = before.get(beforeRun);
                shared = run.attribute() == Attribute.SHARED;
                end = (int) Math.min(nextSetOr(staged.named, p, pages), (run.offset() + run.length()) / GuestMemory.PAGE_SIZE);
            }
            end = Math.min(end, pages);
            if (shared && runStart < 0) {
                runStart = p;
            } else if (!shared && runStart >= 0) {
                toShared(memory, runStart, p);
                runStart = -1;
            }
            p = end;
        }
        if (runStart >= 0) {
            toShared(memory, runStart, pages);
        }
        markPoisoned(memory, staged.poisoned);
    }

    /**
     * Reports the pages that ended poisoned as failed again, last, once their attributes are
     * final: a failed page keeps memory (zero here, as none travels) and its mark.
     */
    private static void markPoisoned(GuestMemory memory, BitSet poisoned) {
        for (int p = poisoned.nextSetBit(0); p >= 0; p = poisoned.nextSetBit(p + 1)) {
            memory.allocate(p * GuestMemory.PAGE_SIZE, GuestMemory.PAGE_SIZE);
            memory.reportMemoryFailure(p * GuestMemory.PAGE_SIZE);
        }
    }

    private static int nextSetOr(BitSet bits, int from, int otherwise) {
        int next = bits.nextSetBit(from);
        return next < 0 ? otherwise : next;
    }

    private static void toShared(GuestMemory memory, int first, int end) {
        // PRESERVE: the pages hold their final shared bytes (a private record's bytes were
        // overwritten by the later shared record, or punched by a later hole).
        memory.convert(first * GuestMemory.PAGE_SIZE, (end - first) * GuestMemory.PAGE_SIZE, Attribute.SHARED, Content.PRESERVE);
    }

    /** Punches the written pages of {@code [first, end)}; with no file (a verify) only forgets them. */
    private static void punchWritten(GuestMemory memory, BitSet written, int first, int end) {
        for (int p = written.nextSetBit(first); p >= 0 && p < end; ) {
            int stop = Math.min(end, written.nextClearBit(p));
            if (memory != null) {
                memory.punchHole(p * GuestMemory.PAGE_SIZE, (stop - p) * GuestMemory.PAGE_SIZE);
            }
            written.clear(p, stop);
            p = written.nextSetBit(stop);
        }
    }

    /** Punches what was written and puts every attribute back as it was, then throws {@code cause}. */
    private static void undo(GuestMemory memory, List<PageRun> before, Staged staged, Exception cause) throws IOException {
        try {
            punchWritten(memory, staged.written, 0, Integer.MAX_VALUE);
            for (PageRun run : before) {
                // The written pages were punched just now: ZERO towards shared says so; towards
                // private no mode may promise zeros, and none is needed.
                memory.convert(run.offset(), run.length(), run.attribute(),
                        run.attribute() == Attribute.SHARED ? Content.ZERO : Content.UNSPECIFIED);
            }
        } catch (RuntimeException failed) {
            cause.addSuppressed(failed);
        }
        if (cause instanceof IOException io) {
            throw io;
        }
        throw (RuntimeException) cause;
    }

    @Override
    public SnapshotContents verify(Consumer<byte[]> states) throws IOException {
        if (restoring) {
            throw new GuestMemoryException(Errno.EINVAL, "verify", "this reader already read its stream", -1);
        }
        restoring = true;
        op = "verify";
        if (fileSize / GuestMemory.PAGE_SIZE > Integer.MAX_VALUE) {
            throw new GuestMemoryException(Errno.EFBIG, op, "pages are tracked with an int index: files up to 8 TiB", -1);
        }
        Staged staged = new Staged();
        List<byte[]> stateRecords;
        try {
            stateRecords = apply(null, staged);
        } catch (EOFException truncated) {
            throw bad(op, "the stream ends early");
        }
        long stateBytes = 0;
        for (byte[] state : stateRecords) {
            stateBytes += state.length;
            states.accept(state);
        }
        BitSet sharedPages = (BitSet) staged.written.clone();
        sharedPages.andNot(staged.privateAtEnd);
        BitSet privatePages = (BitSet) staged.written.clone();
        privatePages.and(staged.privateAtEnd);
        BitSet holes = (BitSet) staged.named.clone();
        holes.andNot(staged.written);
        BitSet privateHoles = (BitSet) holes.clone();
        privateHoles.and(staged.privateAtEnd);
        return new SnapshotContents(fileSize, records, staged.rounds, sharedPages.cardinality(), privatePages.cardinality(),
                holes.cardinality() - privateHoles.cardinality(), privateHoles.cardinality(),
                staged.sharedBytes, staged.privateBytes, stateRecords.size(), stateBytes, staged.poisoned.cardinality());
    }

    private GuestMemoryException alreadyRestored() {
        return new GuestMemoryException(Errno.EALREADY, op, "stream " + HexFormat.of().formatHex(streamId)
                + " was already restored (replay)", -1);
    }
}
