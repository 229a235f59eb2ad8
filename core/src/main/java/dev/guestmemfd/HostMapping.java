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
 * <p>Every range is checked before anything is touched, without overflow: a negative length
 * is {@code EINVAL}; a range that leaves the mapping is {@code EFAULT}, as a system call given
 * an address outside every mapping answers. A null argument throws
 * {@link NullPointerException} naming it.
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
     * @param bytes positive: a lease of nothing is refused, as {@code mmap} refuses length 0
     * @throws HostAccessFault      when a page is private or past the end of the file
     * @throws GuestMemoryException {@code EHWPOISON} when a page of the range is poisoned; nothing is touched
     * @throws GuestMemoryException {@code EINVAL} when {@code bytes} is not positive;
     *                              {@code EFAULT} when the range leaves the mapping or the
     *                              mapping is closed; {@code EBADF} when the file is closed
     */
    public Lease lease(long at, long bytes) {
        // The file offset, saturated: an event is recorded for an overflowing refusal too.
        long fileOffset = at > Long.MAX_VALUE - offset ? Long.MAX_VALUE : offset + at;
        return memory.recordedGrant("lease", fileOffset, bytes, () -> {
            String op = "lease(offset=" + at + ", len=" + bytes + ")";
            if (bytes == 0) {
                throw new GuestMemoryException(Errno.EINVAL, op, "a lease must cover at least one byte", -1);
            }
            checkBounds(op, at, bytes);
            return memory.lease(this, offset + at, bytes, op);
        });
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
     * @throws HostAccessFault     when a page is private or past the end of the file;
     * @throws GuestMemoryException {@code EHWPOISON} when a page of the range is poisoned; nothing is touched
     *                              {@code action} does not run
     * @throws GuestMemoryException {@code EINVAL} when {@code bytes} is negative; {@code EFAULT}
     *                              when the range leaves the mapping or the mapping is closed;
     *                              {@code EBADF} when the file is closed
     */
    public void access(long at, long bytes, Consumer<? super MemorySegment> action) {
        Objects.requireNonNull(action, "action");
        checkBounds("access(offset=" + at + ", len=" + bytes + ")", at, bytes);
        memory.access(this, offset + at, bytes, segment -> {
            action.accept(segment);
            return null;
        });
    }

    /**
     * {@return what {@code action} returns, run as {@link #access} runs it}
     *
     * @throws HostAccessFault     when a page is private or past the end of the file
     * @throws GuestMemoryException {@code EHWPOISON} when a page of the range is poisoned; nothing is touched
     * @throws GuestMemoryException {@code EINVAL} when {@code bytes} is negative; {@code EFAULT}
     *                              when the range leaves the mapping or the mapping is closed;
     *                              {@code EBADF} when the file is closed
     */
    public <T> T compute(long at, long bytes, Function<? super MemorySegment, ? extends T> action) {
        Objects.requireNonNull(action, "action");
        checkBounds("compute(offset=" + at + ", len=" + bytes + ")", at, bytes);
        return memory.access(this, offset + at, bytes, action);
    }

    /**
     * Copies {@code destination.byteSize()} bytes from the mapping at {@code at}, as a scoped
     * {@link #access}: no file-wide lock.
     *
     * @throws HostAccessFault     when any page is private or past the end; nothing is copied
     * @throws GuestMemoryException {@code EHWPOISON} when a page of the range is poisoned; nothing is touched
     * @throws GuestMemoryException {@code EFAULT} when the range leaves the mapping, the
     *                              mapping or the destination is closed, or the destination is
     *                              read-only; {@code EBADF} when the file is closed
     */
    public void read(long at, MemorySegment destination) {
        java.util.Objects.requireNonNull(destination, "destination");
        String op = "read(offset=" + at + ", len=" + destination.byteSize() + ")";
        checkBounds(op, at, destination.byteSize());
        checkSegment(op, destination, true);
        memory.hostCopy(this, offset + at, destination, false);
    }

    /**
     * Copies {@code source} into the mapping at {@code at}, as a scoped {@link #access}.
     *
     * @throws HostAccessFault     when any page is private or past the end; nothing is written
     * @throws GuestMemoryException {@code EHWPOISON} when a page of the range is poisoned; nothing is touched
     * @throws GuestMemoryException {@code EFAULT} when the range leaves the mapping, or the
     *                              mapping or the source is closed; {@code EBADF} when the
     *                              file is closed
     */
    public void write(long at, MemorySegment source) {
        java.util.Objects.requireNonNull(source, "source");
        String op = "write(offset=" + at + ", len=" + source.byteSize() + ")";
        checkBounds(op, at, source.byteSize());
        checkSegment(op, source, false);
        memory.hostCopy(this, offset + at, source, true);
    }

    /**
     * Faults the pages of {@code [at, at + bytes)} in for writing now, as
     * {@code MADV_POPULATE_WRITE} does, so that later host access does not fault page by page.
     *
     * @throws HostAccessFault     when any page is private or past the end; nothing is faulted in
     * @throws GuestMemoryException {@code EHWPOISON} when a page of the range is poisoned; nothing is touched
     * @throws GuestMemoryException {@code EINVAL} when {@code bytes} is negative; {@code EFAULT}
     *                              when the range leaves the mapping or the mapping is closed;
     *                              {@code EBADF} when the file is closed
     */
    public void prefault(long at, long bytes) {
        String op = "prefault(offset=" + at + ", len=" + bytes + ")";
        checkBounds(op, at, bytes);
        memory.hostPrefault(this, offset + at, bytes, op);
    }

    /**
     * {@return a copy of {@code bytes} bytes at {@code at}}
     *
     * @throws GuestMemoryException {@code EINVAL} when {@code bytes} is negative
     * @see #read(long, MemorySegment)
     */
    public byte[] read(long at, int bytes) {
        checkBounds("read(offset=" + at + ", len=" + bytes + ")", at, bytes);
        byte[] data = new byte[bytes];
        read(at, MemorySegment.ofArray(data));
        return data;
    }

    /** Writes {@code data} at {@code at}. @see #write(long, MemorySegment) */
    public void write(long at, byte[] data) {
        java.util.Objects.requireNonNull(data, "data");
        write(at, MemorySegment.ofArray(data));
    }

    /** Refuses a negative length (EINVAL) and a range that leaves the mapping (EFAULT), overflow-safely. */
    private void checkBounds(String op, long at, long bytes) {
        if (bytes < 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "the length is negative", -1);
        }
        if (at < 0 || at > length - bytes) {
            throw new GuestMemoryException(Errno.EFAULT, op, "range [" + at + ", " + at + " + " + bytes
                    + ") leaves the " + length + "-byte mapping", -1);
        }
    }

    /** Refuses a host segment that is closed, or read-only where it is to be written (EFAULT). */
    private static void checkSegment(String op, MemorySegment host, boolean written) {
        if (!host.scope().isAlive()) {
            throw new GuestMemoryException(Errno.EFAULT, op, "the host segment is no longer alive", -1);
        }
        if (written && host.isReadOnly()) {
            throw new GuestMemoryException(Errno.EFAULT, op, "the host segment is read-only", -1);
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
