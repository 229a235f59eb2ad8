package dev.guestmemfd;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.List;
import javax.crypto.SecretKey;

/**
 * Where a lazy restore takes the pages of a file from: their final layout at once, and the
 * bytes of any page on demand, in any order. A snapshot file with an index of its records is
 * one ({@link #open}); a remote source that asks the sending host over the migration channel
 * (post-copy) is meant to be another.
 *
 * <p>Each page with bytes belongs to one <em>extent</em>: a run of pages that one read brings
 * (in a snapshot file, the pages whose last record is the same record). Reading an extent
 * checks what the source can check of it alone (a sealed record's tag); {@link #verify} checks
 * the rest, once, for the whole source (a snapshot's sealed digest over every record).
 *
 * @implSpec {@link #extent} and {@link #read} are thread safe: a fault server and a background
 * pull read at the same time.
 */
public interface PageSource extends AutoCloseable {
    /** A run of pages that one {@link #read} brings, by file offset and length in bytes. */
    record Extent(long offset, long length) {
    }

    /** {@return the size of the file the pages belong to} */
    long fileSize();

    /**
     * {@return the final state of the pages the source names, ascending and not overlapping}
     * An allocated run holds bytes to fetch; a run that is not is a hole: it reads zero and is
     * never fetched. Pages no run names keep what the target file had.
     */
    List<PageRun> layout();

    /** {@return the owner state records, in order, already opened and checked} */
    List<byte[]> ownerStates();

    /**
     * {@return the extent holding the bytes of the page at {@code offset}, or null for a
     * page without bytes}
     */
    Extent extent(long offset);

    /**
     * Reads the bytes of {@code extent} into {@code into} (at least its length; native memory).
     *
     * @throws GuestMemoryException {@code EBADMSG} when a sealed record does not open or the
     *                              source does not hold what its index says (cut short)
     * @throws IOException when the source cannot be read (closed, gone)
     */
    void read(Extent extent, MemorySegment into) throws IOException;

    /**
     * Checks what no single extent can: for a snapshot, that every byte is the stream's own
     * (the sealed SHA-256 at its end).
     *
     * @throws GuestMemoryException {@code EBADMSG} when it does not check out
     * @throws IOException when the source cannot be read
     */
    void verify() throws IOException;

    /** Lets go of the source; reads after it fail with an {@link IOException}. */
    @Override
    void close() throws IOException;

    /**
     * Opens a snapshot file (a finished {@link Snapshot} stream stored whole) as a source: reads
     * its header and the header of every record, which is all the index needs, and opens the
     * owner state records. The page bytes stay in the file until asked for.
     *
     * @param replays claims the stream: a stream restores once, lazily or not
     * @throws GuestMemoryException {@code EBADMSG} for another format, a malformed or cut record,
     *                              or bytes after the end; {@code EALREADY} for a stream the
     *                              guard has seen; {@code EINVAL} for a null argument
     * @throws IOException when the file cannot be read
     */
    static PageSource open(Path file, SecretKey key, Snapshot.ReplayGuard replays) throws IOException {
        return SnapshotFileSource.open(file, key, replays);
    }
}
