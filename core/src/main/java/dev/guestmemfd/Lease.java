package dev.guestmemfd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Direct host access to shared pages through a {@link HostMapping}: a {@link MemorySegment}
 * that works until the lease is closed, its mapping is closed, or any of its pages is
 * converted to private. After that the segment throws {@link IllegalStateException} on any
 * access; no thread is still accessing it when the revoking call returns.
 *
 * <p>A segment that a native call holds when it is revoked (an NIO read into
 * {@code segment().asByteBuffer()}, a downcall) cannot end at once. The pages are revoked
 * under it instead, in the page tables of the host's mapping: from then on the call reads
 * zeros and writes into a page of its own, never the file's pages, and nothing it does can
 * crash the JVM. The segment ends as soon as the call lets it go. {@link #isValid()} is false
 * from the revocation on.
 *
 * <p>Cost: a lease is a shared arena. Granting one takes the file's lock; revoking one closes
 * the arena, which the JVM does by a handshake with every thread it runs, so a conversion
 * over leased pages costs time that grows with the number of threads in the process, whether
 * they touched the pages or not. Keep leases for long-lived access (a ring shared with a
 * device); for short accesses use {@link HostMapping#access}, whose revocation waits only
 * for the accesses in flight over the converted pages.
 *
 * @implSpec Thread safe; the segment may be used from any thread.
 */
public final class Lease implements AutoCloseable {
    private final GuestMemory memory;
    private final HostMapping mapping;
    private final long fileOffset;
    private final long length;
    private final Arena arena;
    private final MemorySegment segment;
    /** Written under the file's lock. */
    private volatile boolean revoked;

    Lease(GuestMemory memory, HostMapping mapping, long fileOffset, long length, Arena arena, MemorySegment segment) {
        this.memory = memory;
        this.mapping = mapping;
        this.fileOffset = fileOffset;
        this.length = length;
        this.arena = arena;
        this.segment = segment;
    }

    /** {@return the segment over the leased pages} */
    public MemorySegment segment() {
        return segment;
    }

    /** {@return the file offset of the first leased byte} */
    public long fileOffset() {
        return fileOffset;
    }

    /** {@return the leased length in bytes} */
    public long length() {
        return length;
    }

    /** {@return true until the lease is closed or revoked: while its segment reaches the file's pages} */
    public boolean isValid() {
        return !revoked && segment.scope().isAlive();
    }

    Arena arena() {
        return arena;
    }

    HostMapping mapping() {
        return mapping;
    }

    /**
     * Ends the segment's life; called with the file's lock held. The lease counts as revoked
     * either way.
     *
     * @return false when a native call still holds the segment, so it cannot end now: the
     * caller must revoke its pages in the page tables and keep the arena until it closes
     */
    boolean revoke() {
        if (revoked) {
            return true;
        }
        revoked = true;
        try {
            arena.close();
            return true;
        } catch (IllegalStateException inNativeCall) {
            return false;
        }
    }

    /** Gives the pages back. Idempotent. */
    @Override
    public void close() {
        memory.release(this);
    }
}
