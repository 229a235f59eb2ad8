package dev.guestmemfd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * A short host reference to shared pages, for I/O, like a page pin of the kernel: it cannot
 * be revoked. A conversion of its pages to private waits for it a bounded time, then fails
 * with {@code EAGAIN} naming the first pinned offset.
 *
 * @implSpec Thread safe.
 */
public final class Pin implements AutoCloseable {
    private final GuestMemory memory;
    private final long offset;
    private final long length;
    private final Arena arena;
    private final MemorySegment segment;

    Pin(GuestMemory memory, long offset, long length, Arena arena, MemorySegment segment) {
        this.memory = memory;
        this.offset = offset;
        this.length = length;
        this.arena = arena;
        this.segment = segment;
    }

    /** {@return the pinned pages} */
    public MemorySegment segment() {
        return segment;
    }

    /** {@return the file offset of the first pinned page} */
    public long offset() {
        return offset;
    }

    /** {@return the pinned length in bytes} */
    public long length() {
        return length;
    }

    Arena arena() {
        return arena;
    }

    /**
     * Ends the segment's life; called with the file's lock held.
     *
     * @return false when a native call still holds the segment, so it cannot end now
     */
    boolean release() {
        try {
            arena.close();
            return true;
        } catch (IllegalStateException inNativeCall) {
            return false;
        }
    }

    /**
     * Unpins; conversions waiting for it go on. Idempotent, and never refused: when a native
     * call still holds the segment, the pin ends for the file at once, and the segment ends
     * when the call lets it go; until then a conversion of its pages revokes them under it in
     * the page tables (it reads zeros and writes into a page of its own).
     */
    @Override
    public void close() {
        memory.unpin(this);
    }
}
