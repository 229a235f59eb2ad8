package dev.guestmemfd.internal;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.StampedLock;

/**
 * The pages of a file reported poisoned (a memory failure) and not punched since: the marks
 * every access checks before it reaches a page. While no page is poisoned, every question
 * asked of the marks is one volatile read.
 *
 * <p>Page numbers, not offsets: the file turns them into offsets and errors.
 *
 * @implSpec Written under the file's lock and, around the bits themselves, the write lock of
 * the file's bits lock (the one that guards its attributes). Read under the file's lock, or,
 * by host accesses that take no lock, by {@link #firstUnlocked}: an optimistic read of the
 * bits lock, validated.
 */
public final class PoisonMarks {
    private final PageBits poisoned;
    private final long pages;
    private final StampedLock bitsLock;
    /** Whether a page is marked: while none is, every check is this one read. */
    private volatile boolean any;

    /**
     * @param pages    the number of pages of the file
     * @param bitsLock the file's lock for the bits that lock-free host accesses read
     */
    public PoisonMarks(long pages, StampedLock bitsLock) {
        this.poisoned = new PageBits(false, pages);
        this.pages = pages;
        this.bitsLock = bitsLock;
    }

    /** {@return whether any page is marked} */
    public boolean any() {
        return any;
    }

    /** {@return whether {@code page} is marked}; under the file's lock. */
    public boolean isMarked(long page) {
        return any && poisoned.isSet(page);
    }

    /** {@return the first marked page of {@code [start, end)}, or -1}; under the file's lock. */
    public long first(long start, long end) {
        return any ? poisoned.firstSet(start, end) : -1;
    }

    /**
     * {@return the first marked page of {@code [start, end)}, or -1} Without the file's lock:
     * an optimistic read of the bits, validated; a read that raced with a writer, or that the
     * racing write made throw, is done again under the read lock.
     */
    public long firstUnlocked(long start, long end) {
        if (!any) {
            return -1;
        }
        long stamp = bitsLock.tryOptimisticRead();
        if (stamp != 0) {
            try {
                long found = poisoned.firstSet(start, end);
                if (bitsLock.validate(stamp)) {
                    return found;
                }
            } catch (RuntimeException tornByAWriter) {
                // read again below, under the lock
            }
        }
        stamp = bitsLock.readLock();
        try {
            return poisoned.firstSet(start, end);
        } finally {
            bitsLock.unlockRead(stamp);
        }
    }

    /** Marks {@code page}; under the file's lock. */
    public void mark(long page) {
        long stamp = bitsLock.writeLock();
        try {
            poisoned.set(page, page + 1, true);
            any = true;
        } finally {
            bitsLock.unlockWrite(stamp);
        }
    }

    /**
     * Clears the marks of pages {@code [start, end)}; under the file's lock.
     *
     * @return the runs {@code {from, to}} of pages that were marked, in order; empty when none was
     */
    public List<long[]> clear(long start, long end) {
        if (first(start, end) < 0) {
            return List.of();
        }
        List<long[]> cleared = new ArrayList<>(1);
        poisoned.forEachRun(start, end, true, (from, to) -> cleared.add(new long[] {from, to}));
        long stamp = bitsLock.writeLock();
        try {
            poisoned.set(start, end, false);
            any = poisoned.firstSet(0, pages) >= 0;
        } finally {
            bitsLock.unlockWrite(stamp);
        }
        return cleared;
    }

    /** {@return the marked pages, in order}; under the file's lock. */
    public List<Long> marked() {
        List<Long> marked = new ArrayList<>();
        if (any) {
            poisoned.forEachRun(0, pages, true, (from, to) -> {
                for (long q = from; q < to; q++) {
                    marked.add(q);
                }
            });
        }
        return marked;
    }

    /** {@return the heap bytes the marks use} */
    public long bytesUsed() {
        return poisoned.bytesUsed();
    }
}
