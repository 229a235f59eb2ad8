package dev.guestmemfd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Direct host access to shared pages through a {@link HostMapping}: a {@link MemorySegment}
 * that works until the lease is closed, its mapping is closed, or any of its pages is
 * converted to private. After that the segment throws {@link IllegalStateException} on any
 * access; no thread is still accessing it when the revoking call returns.
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
    private boolean revoked;  // guarded by the file's lock

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

    /** {@return true while the segment can be used} */
    public boolean isValid() {
        return segment.scope().isAlive();
    }

    HostMapping mapping() {
        return mapping;
    }

    /**
     * Ends the segment's life; called with the file's lock held.
     *
     * @return false when a native call still holds the segment, so it cannot end now
     */
    boolean revoke() {
        if (revoked) {
            return true;
        }
        try {
            arena.close();
        } catch (IllegalStateException inNativeCall) {
            return false;
        }
        revoked = true;
        return true;
    }

    /** Gives the pages back. Idempotent. */
    @Override
    public void close() {
        memory.release(this);
    }
}
