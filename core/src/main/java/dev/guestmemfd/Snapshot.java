package dev.guestmemfd;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.BitSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Consumer;
import javax.crypto.SecretKey;

/**
 * Snapshot and restore of a guest memory file through its owner, as a migration agent
 * (SEV-SNP's) or migration TD (TDX's) would: only allocated pages travel, holes stay holes,
 * shared pages travel in the clear with a tag of their own, private pages travel sealed with
 * AES-GCM under a key the two owners agree on, and so does the owner's own state (a VM's vCPU
 * registers). Every record with bytes is checked alone, in its place; the stream is versioned
 * and authenticated end to end, and ends at its sealed digest. A one-pass snapshot
 * ({@link #write}) starts with the final layout of the file, so it can be restored lazily as it
 * arrives ({@link PageSource#open(java.io.InputStream, javax.crypto.SecretKey, ReplayGuard,
 * java.time.Duration)}).
 *
 * <p>A stream is a sequence of records applied in order, a later record of a page replacing an
 * earlier one: a snapshot sends each page once ({@link Writer#writeAll()}); a pre-copy
 * migration sends every page once while the guest runs, then again each page changed since
 * ({@link Writer#writePages(BitSet)}), the last time with the guest paused.
 *
 * <p>A restore never lets host code see a byte that the file's final state would not show it:
 * every page of the target is held private while the records land, and the pages whose last
 * record left them shared are made shared only after the stream's end has checked out. A
 * refused restore leaves the target as it was. The layout of the stream is in
 * {@code SnapshotFormat}; {@code docs/SNAPSHOT.md} says more.
 *
 * @implSpec The entry points validate their arguments and fail with {@link GuestMemoryException}.
 * A {@link Writer} or {@link Reader} is used by one thread; a {@link ReplayGuard} is thread safe.
 */
public final class Snapshot {
    /** The format version written; versions 2 and up to this one are read. */
    public static final int VERSION = SnapshotFormat.VERSION;
    /** Bytes of one page record at most. */
    static final int CHUNK = SnapshotFormat.CHUNK;

    private Snapshot() {
    }

    /** Where a stream ends in the input it is read from. */
    public enum Framing {
        /**
         * The stream is all of the input (a file): a byte after its sealed end is refused with
         * {@code EBADMSG}, and the input is read up to its end.
         */
        WHOLE_INPUT,
        /**
         * The stream is one message of a longer conversation (a migration socket): the reader
         * stops at the sealed end and leaves what follows to the caller, whose protocol must
         * frame it.
         */
        EMBEDDED
    }

    /**
     * Remembers the streams already restored, so that none is applied twice.
     *
     * @implSpec Thread safe: two restores of one stream through one guard, at the same time,
     * leave at most one applied.
     */
    public static final class ReplayGuard {
        private final Set<String> restored = ConcurrentHashMap.newKeySet();

        /** A guard that has seen no stream yet; keep one per receiving owner. */
        public ReplayGuard() {
        }

        /** {@return true when the stream was restored through this guard} */
        boolean seen(byte[] streamId) {
            return restored.contains(HexFormat.of().formatHex(streamId));
        }

        /** {@return true when this call claims the stream; false when it was restored (or is being) already} */
        boolean claim(byte[] streamId) {
            return restored.add(HexFormat.of().formatHex(streamId));
        }

        /** Gives back a claim whose restore was undone after all. */
        void forget(byte[] streamId) {
            restored.remove(HexFormat.of().formatHex(streamId));
        }
    }

    /**
     * Writes one stream. Not thread-safe: one thread sends, while the file's guest may go on
     * running (a page it changes meanwhile must be sent again, as pre-copy does).
     */
    public sealed interface Writer permits SnapshotWriter {
        /**
         * Writes the owner's own state (vCPU registers, a machine's description), sealed.
         *
         * @throws GuestMemoryException {@code EINVAL} for null, more than 16 MiB, or a finished stream
         */
        void writeState(byte[] state) throws IOException;

        /**
         * Writes every page of the file: allocated ones with their bytes, holes as their
         * attribute.
         *
         * @return the page bytes written
         * @throws GuestMemoryException {@code EINVAL} when the stream is finished; {@code EBADF}
         *                              when the file is closed
         */
        long writeAll() throws IOException;

        /**
         * Writes the pages whose indexes (file offset / page size) are set, each in the state it
         * is in now.
         *
         * @return the page bytes written
         * @throws GuestMemoryException {@code EINVAL} for null or a finished stream;
         *                              {@code EBADF} when the file is closed
         */
        long writePages(BitSet pages) throws IOException;

        /** {@return the page bytes written so far} */
        long pageBytes();

        /** Writes the end record and the sealed digest, and flushes; nothing may follow. Idempotent. */
        void finish() throws IOException;

        /** Flushes what was written, for a receiver that applies as it reads. */
        void flush() throws IOException;
    }

    /**
     * Reads one stream and applies it as it goes, staged so that host code sees nothing of it
     * until its end checks out; on any failure it undoes what it applied, so the file ends as
     * it began.
     */
    public sealed interface Reader permits SnapshotReader {
        /** {@return the size of the file the stream was taken from} */
        long fileSize();

        /**
         * Reads the next record, which must be owner state, as a sender writes it before any
         * page (a machine's description, so that the receiver can build the machine).
         *
         * @throws GuestMemoryException {@code EBADMSG} when it is not, does not open, or is cut;
         *                              {@code EINVAL} once the stream was handed to restore
         */
        byte[] readState() throws IOException;

        /**
         * Applies every record to an empty file of the stream's size, checks the end, then
         * hands the owner state records to {@code states} in order and makes the pages whose
         * final state is shared reachable by host code. While it runs every page of the file
         * is private (host access faults; leases are revoked, and a pin makes it fail with
         * {@code EAGAIN} before anything changed). Empty: every page is a hole; on a backing
         * that does not return punched memory ({@link Backing#SECRET}), a page that reads zero
         * counts as a hole. A reader restores once.
         *
         * @throws GuestMemoryException {@code EBADMSG} for a truncated, corrupted or wrong-key
         *                              stream, or bytes after its end ({@link Framing#WHOLE_INPUT});
         *                              {@code EALREADY} for a replayed one; {@code EINVAL} for
         *                              bindings that do not cover one file once, a file of
         *                              another size or one that is not empty, or a second
         *                              restore; {@code EFBIG} for a file over 8 TiB; and
         *                              whatever the file's conversions or {@code states} throw.
         *                              In every case what was applied is undone first: the
         *                              attributes and contents are as before, and so is what is
         *                              allocated, except on {@link Backing#SECRET}, where pages
         *                              the restore wrote stay allocated, reading zero
         */
        void restore(List<Binding> owners, Consumer<byte[]> states) throws IOException;

        /**
         * Reads the rest of the stream without applying it: checks every record as
         * {@link #restore} does, opens every sealed one and checks the end, but needs no target
         * file and marks nothing in the replay guard. For checking a snapshot file on a host that
         * could not restore it.
         *
         * @param states told each owner state record, opened, in order
         * @return what the stream holds
         * @throws GuestMemoryException {@code EBADMSG} for a truncated, corrupted or wrong-key
         *                              stream, or bytes after its end ({@link Framing#WHOLE_INPUT});
         *                              {@code EFBIG} for a file over 8 TiB; {@code EINVAL} once
         *                              the stream was handed to restore or verify
         */
        SnapshotContents verify(Consumer<byte[]> states) throws IOException;
    }

    /**
     * Writes every allocated page of the file to {@code out}, a finished stream.
     *
     * @param owner the owner's binding over the whole file: it alone reads private pages
     * @param key   the AES key the sending and receiving owners share
     * @return the number of page bytes written
     */
    public static long write(Binding owner, SecretKey key, OutputStream out) throws IOException {
        return write(List.of(requireBinding(owner, "snapshot")), key, out);
    }

    /**
     * Writes every allocated page of a file whose owners' bindings together cover it, as a
     * VM's memslots do.
     *
     * @throws GuestMemoryException {@code EINVAL} for bindings that do not cover one file,
     *                              each page once; {@code EBADF} when the file is closed;
     *                              {@code EAGAIN} when a shared page became private while it was
     *                              written (the stream's layout no longer holds: write it again)
     * @see #write(Binding, SecretKey, OutputStream)
     */
    public static long write(List<Binding> owners, SecretKey key, OutputStream out) throws IOException {
        // One pass: the stream starts with the layout, so it can be restored lazily as it arrives.
        SnapshotWriter writer = (SnapshotWriter) writer(owners, key, out);
        writer.writeSnapshot();
        writer.finish();
        return writer.pageBytes();
    }

    /**
     * Reads a finished stream, all of {@code in}, into a file that holds no memory yet and is
     * of the stream's size.
     *
     * @throws GuestMemoryException {@code EBADMSG} for a truncated, corrupted or wrong-key
     *                              stream, an unknown version, bytes after its end, or one that
     *                              carries owner state; {@code EALREADY} for a stream already
     *                              restored; {@code EINVAL} for a file of another size or one
     *                              that is not empty; in every case the file is as before
     * @see Reader#restore(List, Consumer)
     */
    public static void restore(Binding owner, SecretKey key, InputStream in, ReplayGuard replays) throws IOException {
        restore(List.of(requireBinding(owner, "restore")), key, in, replays);
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

    /**
     * Starts a stream: writes its header.
     *
     * @throws GuestMemoryException {@code EINVAL} for bindings that do not cover one file, each
     *                              page once, or a null key or stream
     */
    public static Writer writer(List<Binding> owners, SecretKey key, OutputStream out) throws IOException {
        BindingCover cover = BindingCover.of(owners, "snapshot");
        if (key == null || out == null) {
            throw new GuestMemoryException(Errno.EINVAL, "snapshot", "a key and a stream must be given", -1);
        }
        return new SnapshotWriter(cover, key, out);
    }

    /**
     * Starts reading a stream that is all of {@code in}: reads and checks its header.
     *
     * @throws GuestMemoryException {@code EBADMSG} for another format or version, or a stream
     *                              that ends early; {@code EALREADY} for one already restored;
     *                              {@code EINVAL} for a null argument
     */
    public static Reader reader(SecretKey key, InputStream in, ReplayGuard replays) throws IOException {
        return reader(key, in, replays, Framing.WHOLE_INPUT);
    }

    /**
     * Starts reading a stream framed as {@code framing} says: reads and checks its header.
     *
     * @see #reader(SecretKey, InputStream, ReplayGuard)
     */
    public static Reader reader(SecretKey key, InputStream in, ReplayGuard replays, Framing framing) throws IOException {
        return new SnapshotReader(key, in, replays, framing);
    }

    private static Binding requireBinding(Binding owner, String op) {
        if (owner == null) {
            throw new GuestMemoryException(Errno.EINVAL, op, "a binding is null", -1);
        }
        return owner;
    }
}
