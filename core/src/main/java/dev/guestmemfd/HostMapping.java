package dev.guestmemfd;

import java.lang.foreign.MemorySegment;
import java.util.Objects;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * Host access to a range of a guest memory file, like a VMA: it lives until closed, and
 * through it host code reaches the pages that are shared at the time of access.
 *
 * <p>Three ways in: {@link #access} and {@link #compute} run code with a segment that lives
 * for the call only; {@link #read} and {@link #write} copy; a {@link Lease} hands out a
 * {@link MemorySegment} for as long as the pages stay shared. The first two are the fast
 * path: they take no file-wide lock, and a conversion to private waits only for the ones in
 * flight over its own pages. Touching a private page, or a page past the end of the file,
 * raises {@link HostAccessFault}; a revoked segment raises {@link IllegalStateException}.
 * Offsets here are relative to the mapping.
 *
 * @implSpec Thread safe.
 */
public final class HostMapping implements AutoCloseable {
    private final GuestMemory memory;
    private final long offset;
    private final long length;
    private volatile boolean closed;

    HostMapping(GuestMemory memory, long offset, long length) {
        this.memory = memory;
        this.offset = offset;
        this.length = length;
    }

    /** {@return the file offset where the mapping starts} */
    public long offset() {
        return offset;
    }

    /** {@return the mapping's length in bytes, which may reach past the end of the file} */
    public long length() {
        return length;
    }

    /**
     * Leases direct access to {@code [at, at + bytes)} of the mapping.
     *
     * @throws HostAccessFault           when a page is private or past the end of the file
     * @throws IndexOutOfBoundsException when the range leaves the mapping
     * @throws GuestMemoryException      {@code EFAULT} when the mapping is closed, {@code EBADF}
     *                                   when the file is
     */
    public Lease lease(long at, long bytes) {
        checkBounds(at, bytes);
        return memory.lease(this, offset + at, bytes, "lease(offset=" + at + ", len=" + bytes + ")");
    }

    /**
     * Runs {@code action} with a segment over {@code [at, at + bytes)} of the mapping, valid
     * for the duration of the call and in this thread only. Every page is shared throughout:
     * a conversion to private of any of them waits until the call returns (at most its pin
     * wait, then it fails with {@code EAGAIN}), and one that began first makes this call wait
     * for it to end.
     *
     * <p>Cost: two atomic additions to counters that only accesses to nearby pages share, and
     * a confined arena; no lock. Keep the action short: a conversion of these pages waits for
     * it. The segment must not escape the action (its arena is closed when the action returns).
     *
     * @throws HostAccessFault           when a page is private or past the end of the file;
     *                                   {@code action} does not run
     * @throws IndexOutOfBoundsException when the range leaves the mapping
     * @throws GuestMemoryException      {@code EFAULT} when the mapping is closed, {@code EBADF}
     *                                   when the file is
     */
    public void access(long at, long bytes, Consumer<? super MemorySegment> action) {
        Objects.requireNonNull(action, "action");
        checkBounds(at, bytes);
        memory.access(this, offset + at, bytes, segment -> {
            action.accept(segment);
            return null;
        });
    }

    /**
     * {@return what {@code action} returns, run as {@link #access} runs it}
     *
     * @throws HostAccessFault           when a page is private or past the end of the file
     * @throws IndexOutOfBoundsException when the range leaves the mapping
     * @throws GuestMemoryException      {@code EFAULT} when the mapping is closed, {@code EBADF}
     *                                   when the file is
     */
    public <T> T compute(long at, long bytes, Function<? super MemorySegment, ? extends T> action) {
        Objects.requireNonNull(action, "action");
        checkBounds(at, bytes);
        return memory.access(this, offset + at, bytes, action);
    }

    /**
     * Copies {@code destination.byteSize()} bytes from the mapping at {@code at}, as a scoped
     * {@link #access}: no file-wide lock.
     *
     * @throws HostAccessFault when any page is private or past the end; nothing is copied
     */
    public void read(long at, MemorySegment destination) {
        checkBounds(at, destination.byteSize());
        memory.hostCopy(this, offset + at, destination, false);
    }

    /**
     * Copies {@code source} into the mapping at {@code at}, as a scoped {@link #access}.
     *
     * @throws HostAccessFault when any page is private or past the end; nothing is written
     */
    public void write(long at, MemorySegment source) {
        checkBounds(at, source.byteSize());
        memory.hostCopy(this, offset + at, source, true);
    }

    /**
     * Faults the pages of {@code [at, at + bytes)} in for writing now, as
     * {@code MADV_POPULATE_WRITE} does, so that later host access does not fault page by page.
     *
     * @throws HostAccessFault when any page is private or past the end; nothing is faulted in
     */
    public void prefault(long at, long bytes) {
        checkBounds(at, bytes);
        memory.hostPrefault(this, offset + at, bytes, "prefault(offset=" + at + ", len=" + bytes + ")");
    }

    /** {@return a copy of {@code bytes} bytes at {@code at}} @see #read(long, MemorySegment) */
    public byte[] read(long at, int bytes) {
        byte[] data = new byte[bytes];
        read(at, MemorySegment.ofArray(data));
        return data;
    }

    /** Writes {@code data} at {@code at}. @see #write(long, MemorySegment) */
    public void write(long at, byte[] data) {
        write(at, MemorySegment.ofArray(data));
    }

    private void checkBounds(long at, long bytes) {
        if (at < 0 || bytes < 0 || at > length - bytes) {
            throw new IndexOutOfBoundsException("range [" + at + ", " + at + " + " + bytes
                    + ") is outside the " + length + "-byte mapping");
        }
    }

    boolean isClosed() {
        return closed;
    }

    /** Unmaps: revokes every lease handed out through this mapping. Idempotent. */
    @Override
    public void close() {
        closed = true;
        memory.unmap(this);
    }
}
