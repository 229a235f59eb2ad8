package dev.guestmemfd;

import java.lang.foreign.MemorySegment;

/**
 * Host access to a range of a guest memory file, like a VMA: it lives until closed, and
 * through it host code reaches the pages that are shared at the time of access.
 *
 * <p>Two ways in: {@link #read} and {@link #write} check every page and copy; a
 * {@link Lease} hands out a {@link MemorySegment} for direct access, which a conversion of
 * any of its pages to private revokes. Touching a private page, or a page past the end of
 * the file, raises {@link HostAccessFault}; a revoked segment raises
 * {@link IllegalStateException}. Offsets here are relative to the mapping.
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
     * Copies {@code destination.byteSize()} bytes from the mapping at {@code at}.
     *
     * @throws HostAccessFault when any page is private or past the end; nothing is copied
     */
    public void read(long at, MemorySegment destination) {
        checkBounds(at, destination.byteSize());
        memory.hostCopy(this, offset + at, destination, false,
                "read(offset=" + at + ", len=" + destination.byteSize() + ")");
    }

    /**
     * Copies {@code source} into the mapping at {@code at}.
     *
     * @throws HostAccessFault when any page is private or past the end; nothing is written
     */
    public void write(long at, MemorySegment source) {
        checkBounds(at, source.byteSize());
        memory.hostCopy(this, offset + at, source, true, "write(offset=" + at + ", len=" + source.byteSize() + ")");
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
