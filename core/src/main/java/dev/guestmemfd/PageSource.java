package dev.guestmemfd;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import javax.crypto.SecretKey;

/**
 * Where a lazy restore takes the pages of a file from: their final layout at once, and the
 * bytes of any page on demand, in any order. A snapshot file with an index of its records is
 * one ({@link #open(Path, SecretKey, Snapshot.ReplayGuard)}), a snapshot arriving as a stream
 * another ({@link #open(InputStream, SecretKey, Snapshot.ReplayGuard, Duration)}), and the
 * post-copy destination's {@code RemotePageSource} a third.
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

    /**
     * Opens a snapshot arriving as a stream (a pipe, a socket; for a channel,
     * {@link java.nio.channels.Channels#newInputStream}), the whole of {@code in}, which the
     * source then owns and closes. A background reader drives the stream to its end and keeps
     * what it read in an unlinked memfd, so a page read so far is served at once and a page not
     * yet read waits for the stream to reach it. A one-pass stream ({@link Snapshot#write},
     * version 4) opens as soon as its layout (the first records) is read; any other stream (a
     * pre-copy stream of several rounds, or version 2 or 3) names a page's final state only at
     * its end, so it opens once read whole. {@link #verify} waits for the end and checks it.
     *
     * @param stall how long the stream may send nothing while a read waits on it: then the
     *              source fails with {@code EIO} (a stalled sender never hangs a reader)
     * @throws GuestMemoryException {@code EBADMSG} for another format, or a stream cut, altered
     *                              or malformed before it opened; {@code EALREADY} for a stream
     *                              the guard has seen; {@code EIO} when it stalled or could not
     *                              be read; {@code EINVAL} for a null argument or a stall that is
     *                              not positive
     * @throws IOException when the spool cannot be made
     */
    static PageSource open(InputStream in, SecretKey key, Snapshot.ReplayGuard replays, Duration stall) throws IOException {
        return SnapshotStreamSource.open(in, key, replays, stall);
    }
}
