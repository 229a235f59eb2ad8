package dev.guestmemfd;

import static dev.guestmemfd.SnapshotFormat.CHUNK;
import static dev.guestmemfd.SnapshotFormat.END;
import static dev.guestmemfd.SnapshotFormat.LAYOUT;
import static dev.guestmemfd.SnapshotFormat.MAX_STATE;
import static dev.guestmemfd.SnapshotFormat.POISONED;
import static dev.guestmemfd.SnapshotFormat.PRIVATE;
import static dev.guestmemfd.SnapshotFormat.PRIVATE_HOLE;
import static dev.guestmemfd.SnapshotFormat.SHARED;
import static dev.guestmemfd.SnapshotFormat.SHARED_HOLE;
import static dev.guestmemfd.SnapshotFormat.STATE;
import static dev.guestmemfd.SnapshotFormat.TRAILER_RECORD;

import java.io.DataOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.foreign.MemorySegment;
import java.security.DigestOutputStream;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import javax.crypto.SecretKey;

/**
 * Writes one stream of {@link SnapshotFormat}: reads pages through the owners' bindings,
 * shared ones under the file's lock so that a page converted meanwhile never travels in the
 * clear. Not thread-safe: one thread sends, while the file's guest may go on running.
 */
final class SnapshotWriter implements Snapshot.Writer {
    private final BindingCover owners;
    private final GuestMemory memory;
    private final SecretKey key;
    private final OutputStream raw;
    private final MessageDigest digest = SnapshotFormat.sha256();
    private final DataOutputStream data;
    private final byte[] streamId = new byte[SnapshotFormat.STREAM_ID_BYTES];
    private final byte[] buffer;
    private long records;
    private long pageBytes;
    private boolean finished;
    /** A layout was written: every page must now travel exactly as it says, once. */
    private boolean promised;
    /** A page or hole record was written: too late for a layout. */
    private boolean pagesNamed;

    SnapshotWriter(BindingCover owners, SecretKey key, OutputStream out) throws IOException {
        this.owners = owners;
        this.memory = owners.memory();
        this.key = key;
        this.raw = out;
        this.data = new DataOutputStream(new DigestOutputStream(out, digest));
        this.buffer = new byte[(int) Math.min(CHUNK, memory.size())];
        new SecureRandom().nextBytes(streamId);
        SnapshotFormat.writeHeader(data, memory.size(), streamId);
    }

    @Override
    public void writeState(byte[] state) throws IOException {
        ensureOpen("writeState");
        if (state == null || state.length > MAX_STATE) {
            throw new GuestMemoryException(Errno.EINVAL, "writeState", "owner state must be given and at most "
                    + MAX_STATE + " bytes", -1);
        }
        SnapshotFormat.writeRecordHeader(data, STATE, 0, state.length);
        data.write(SnapshotFormat.seal(key, streamId, records++, STATE, 0, state, state.length));
    }

    /**
     * Writes a one-pass snapshot: the layout record (the final state of every page), then each
     * page once, as the layout says, so a reader of the stream knows each page's state before
     * its bytes arrive. Where a layout cannot be promised (a poisoned page travels as a hole
     * and a mark, or a layout too large for one record) only the pages are written.
     *
     * @throws GuestMemoryException {@code EAGAIN} when a shared page became private while it
     *                              was written: the stream would break its layout (the stream
     *                              is unusable then; write it again)
     */
    long writeSnapshot() throws IOException {
        ensureOpen("snapshot");
        List<PageRun> runs = memory.pageRuns();
        if (!pagesNamed && memory.firstPoisoned(0, memory.size()) < 0
                && (long) runs.size() * SnapshotFormat.LAYOUT_RUN_BYTES <= MAX_STATE) {
            byte[] layout = SnapshotFormat.encodeLayout(runs);
            SnapshotFormat.writeRecordHeader(data, LAYOUT, 0, layout.length);
            data.write(SnapshotFormat.seal(key, streamId, records++, LAYOUT, 0, layout, layout.length));
            promised = true;
        }
        long before = pageBytes;
        for (PageRun run : runs) {
            writeRun(run, run.offset(), run.offset() + run.length());
        }
        return pageBytes - before;
    }

    @Override
    public long writeAll() throws IOException {
        ensureOpen("writeAll");
        long before = pageBytes;
        for (PageRun run : memory.pageRuns()) {
            writeRun(run, run.offset(), run.offset() + run.length());
        }
        return pageBytes - before;
    }

    @Override
    public long writePages(BitSet pages) throws IOException {
        ensureOpen("writePages");
        if (pages == null) {
            throw new GuestMemoryException(Errno.EINVAL, "writePages", "no page set given", -1);
        }
        long before = pageBytes;
        if (pages.isEmpty()) {
            return 0;
        }
        for (PageRun run : memory.pageRuns()) {
            long first = run.offset() / GuestMemory.PAGE_SIZE;
            long end = (run.offset() + run.length()) / GuestMemory.PAGE_SIZE;
            if (first > Integer.MAX_VALUE) {
                break;  // a BitSet indexes no page past 2^31 - 1
            }
            for (int p = pages.nextSetBit((int) first); p >= 0 && p < end; ) {
                int stop = (int) Math.min(end, pages.nextClearBit(p));
                writeRun(run, p * GuestMemory.PAGE_SIZE, stop * GuestMemory.PAGE_SIZE);
                p = pages.nextSetBit(stop);
            }
        }
        return pageBytes - before;
    }

    /**
     * Writes {@code [from, to)} of a run as the run's state, a poisoned page as a hole of its
     * attribute marked poisoned: its memory failed, and no byte of it may travel.
     */
    private void writeRun(PageRun run, long from, long to) throws IOException {
        pagesNamed = true;
        long at = from;
        for (long bad; at < to && (bad = memory.firstPoisoned(at, to - at)) >= 0; at = bad + GuestMemory.PAGE_SIZE) {
            if (bad > at) {
                writeClean(run, at, bad);
            }
            SnapshotFormat.writeRecordHeader(data, run.attribute() == Attribute.PRIVATE ? PRIVATE_HOLE : SHARED_HOLE, bad, 1);
            SnapshotFormat.writeRecordHeader(data, POISONED, bad, 1);
            records += 2;
        }
        if (at < to) {
            writeClean(run, at, to);
        }
    }

    /** Writes {@code [from, to)} of a run, no page of it poisoned, as the run's state. */
    private void writeClean(PageRun run, long from, long to) throws IOException {
        if (!run.allocated()) {
            SnapshotFormat.writeRecordHeader(data, run.attribute() == Attribute.PRIVATE ? PRIVATE_HOLE : SHARED_HOLE,
                    from, Math.toIntExact((to - from) / GuestMemory.PAGE_SIZE));
            records++;
            return;
        }
        for (long at = from; at < to; ) {
            Binding owner = owners.at(at);
            int length = (int) Math.min(Math.min(CHUNK, to - at), owner.offset() + owner.length() - at);
            MemorySegment pages = owner.pages().asSlice(at - owner.offset(), length);
            MemorySegment into = MemorySegment.ofArray(buffer).asSlice(0, length);
            boolean sealed = run.attribute() == Attribute.PRIVATE;
            if (!sealed && !memory.copyIfShared(pages, at, into)) {
                if (promised) {
                    throw new GuestMemoryException(Errno.EAGAIN, "snapshot", "page at offset " + at
                            + " became private while the snapshot was written: its layout no longer holds", at);
                }
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
            SnapshotFormat.writeRecordHeader(data, sealed ? PRIVATE : SHARED, at, length);
            if (sealed) {
                data.write(SnapshotFormat.seal(key, streamId, records, PRIVATE, at, buffer, length));
                Arrays.fill(buffer, 0, length, (byte) 0);  // private bytes do not linger on the heap
            } else {
                data.write(buffer, 0, length);
                data.write(SnapshotFormat.tag(key, streamId, records, at, buffer, length));
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
            SnapshotFormat.writeRecordHeader(data, SHARED, p, page);
            data.write(buffer, 0, page);
            data.write(SnapshotFormat.tag(key, streamId, records, p, buffer, page));
            records++;
            pageBytes += page;
        }
    }

    @Override
    public long pageBytes() {
        return pageBytes;
    }

    @Override
    public void finish() throws IOException {
        if (finished) {
            return;
        }
        finished = true;
        data.writeByte(END);
        data.writeLong(records);
        data.flush();
        byte[] sum = digest.digest();
        raw.write(SnapshotFormat.seal(key, streamId, TRAILER_RECORD, END, records, sum, sum.length));
        raw.flush();
    }

    @Override
    public void flush() throws IOException {
        data.flush();
    }

    /** A finished stream takes no more records: they would follow its trailer, where a reader refuses them. */
    private void ensureOpen(String op) {
        if (finished) {
            throw new GuestMemoryException(Errno.EINVAL, op, "the stream is finished", -1);
        }
    }
}
