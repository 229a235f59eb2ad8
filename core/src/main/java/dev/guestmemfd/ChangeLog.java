package dev.guestmemfd;

import java.util.BitSet;

/**
 * The pages of a file that the library or host code changed while the log was open: the
 * host-side half of a migration's dirty tracking. KVM's dirty log sees what a guest writes
 * through an ordinary memslot; it does not see allocations, punches, conversions, populates or
 * host writes, which go through the library. This log sees those. Host code holding a
 * {@link Lease} or {@link Pin} can write without asking, so every page under one counts as
 * changed at each {@link #drain()} for as long as it is held.
 *
 * <p>Get one from {@link GuestMemory#trackChanges()}; it costs nothing to a file with none
 * open, and one bit per page of the file's changed span while open.
 */
public final class ChangeLog implements AutoCloseable {
    private final GuestMemory memory;
    /** Guarded by the file's lock. */
    private BitSet pages = new BitSet();
    private boolean closed;

    ChangeLog(GuestMemory memory) {
        this.memory = memory;
    }

    /** Marks pages {@code [first, end)}; the caller holds the file's lock. */
    void mark(long first, long end) {
        pages.set(Math.toIntExact(first), Math.toIntExact(end));
    }

    /**
     * {@return the pages changed since the log opened or since the last drain, by page index
     * (file offset / page size)} and starts afresh. Pages under a live lease or pin are
     * included every time.
     */
    public BitSet drain() {
        return memory.drain(this);
    }

    BitSet take() {
        BitSet taken = pages;
        pages = new BitSet();
        return taken;
    }

    boolean isClosed() {
        return closed;
    }

    /** Stops recording. Idempotent. */
    @Override
    public void close() {
        memory.untrack(this);
        closed = true;
    }
}
