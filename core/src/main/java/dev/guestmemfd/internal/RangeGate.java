package dev.guestmemfd.internal;

import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The announce/wait protocol between short host accesses and the conversion that must not
 * overlap them, over ranges of pages.
 *
 * <p>An accessor announces itself by incrementing the in-flight counter of every stripe its
 * pages fall in, then reads the blocked range; a converter publishes the blocked range, then
 * reads the counters of its stripes. Both steps are sequentially consistent (volatile), so of
 * an accessor and a converter over common pages at least one sees the other: either the
 * accessor sees the block and steps back, or the converter sees the count and waits for it.
 * Pages map to stripes by groups of {@link #GROUP_PAGES}, modulo {@link #STRIPES}: two ranges
 * that share a page share a stripe; ranges that share only a stripe make the converter wait
 * for an access it did not need to (a cost, never an error).
 *
 * <p>Accessors over pages no conversion blocks take no lock and write only their own stripes'
 * counters; nothing is file-wide on their path. The lock given is used only to sleep: by an
 * accessor that met a block, by a converter that found an access in flight (the lock is
 * released while it sleeps), and by an accessor that leaves while a converter sleeps.
 *
 * @implSpec Thread safe. At most one range is blocked at a time: the file converts one range
 * at a time. {@link #close()} blocks every page for good.
 */
public final class RangeGate {
    /** Stripes of in-flight counters: a power of two. */
    public static final int STRIPES = 256;
    /** Pages per group: consecutive pages of one group share a stripe. */
    public static final int GROUP_PAGES = 16;
    private static final int GROUP_SHIFT = Integer.numberOfTrailingZeros(GROUP_PAGES);
    /** Longs per counter: 128 bytes, so that adjacent stripes never share a cache line pair. */
    private static final int PAD = 16;

    /** A blocked range of pages {@code [start, end)}. */
    private record Blocked(long start, long end) {
        boolean overlaps(long from, long to) {
            return start < to && from < end;
        }
    }

    private static final Blocked CLOSED = new Blocked(Long.MIN_VALUE, Long.MAX_VALUE);

    private final AtomicLongArray inFlight = new AtomicLongArray(STRIPES * PAD);
    private volatile Blocked blocked;
    /** Converters asleep until an access leaves: read by every leaving accessor. */
    private volatile int sleepingConverters;
    private final ReentrantLock sleep;
    private final Condition quiet;
    private final Condition unblocked;

    /**
     * @param sleep the lock to sleep under: the file's, so that a converter waiting here lets
     *              every other operation on the file go on, as it does while it waits for pins
     */
    public RangeGate(ReentrantLock sleep) {
        this.sleep = sleep;
        this.quiet = sleep.newCondition();
        this.unblocked = sleep.newCondition();
    }

    /**
     * Announces an access to pages {@code [start, end)}, first waiting while a conversion
     * blocks any of them.
     *
     * @return true once announced (the caller must {@link #exit} with the same range), false
     * when the gate is closed (nothing to exit)
     */
    public boolean enter(long start, long end) {
        while (true) {
            add(start, end, 1);
            Blocked b = blocked;
            if (b == null || !b.overlaps(start, end)) {
                return true;
            }
            add(start, end, -1);
            wakeConverters();
            if (b == CLOSED) {
                return false;
            }
            awaitUnblocked(start, end);
        }
    }

    /** Ends an access announced by {@link #enter} over the same pages. */
    public void exit(long start, long end) {
        add(start, end, -1);
        wakeConverters();
    }

    /**
     * Blocks pages {@code [start, end)}: from now on accesses to them wait in {@link #enter}.
     * No-op once closed.
     *
     * @throws IllegalStateException when another range is blocked
     */
    public void block(long start, long end) {
        sleep.lock();
        try {
            if (blocked == CLOSED) {
                return;
            }
            if (blocked != null) {
                throw new IllegalStateException("pages [" + blocked.start + ", " + blocked.end + ") are already blocked");
            }
            blocked = new Blocked(start, end);
        } finally {
            sleep.unlock();
        }
    }

    /** Lets the accesses waiting for the blocked range in. No-op once closed. */
    public void unblock() {
        sleep.lock();
        try {
            if (blocked != CLOSED) {
                blocked = null;
            }
            unblocked.signalAll();
        } finally {
            sleep.unlock();
        }
    }

    /** Blocks every page for good: {@link #enter} returns false from now on. Idempotent. */
    public void close() {
        sleep.lock();
        try {
            blocked = CLOSED;
            unblocked.signalAll();
        } finally {
            sleep.unlock();
        }
    }

    /** How long a converter spins for accesses in flight to end before it sleeps. */
    private static final long SPIN_NANOS = 50_000;

    /**
     * Waits until no access announced over pages {@code [start, end)} is in flight, at most
     * {@code nanos}. Call it after {@link #block}ing them, so that none can start meanwhile.
     *
     * @return true when none is in flight, false at the deadline
     */
    public boolean awaitQuiet(long start, long end, long nanos) {
        if (inFlight(start, end) == 0) {
            return true;
        }
        long deadline = System.nanoTime() + nanos;
        // An access is a copy of a few KiB, a fraction of a microsecond: spin a little before
        // sleeping, because a sleeping converter waits for the scheduler to wake it (up to
        // milliseconds on a busy machine) long after the access ended. The same recount ends
        // the spin as ends the sleep, so this changes when the converter looks, not what it sees.
        long spinUntil = Math.min(deadline, System.nanoTime() + SPIN_NANOS);
        while (System.nanoTime() < spinUntil) {
            if (inFlight(start, end) == 0) {
                return true;
            }
            Thread.onSpinWait();
        }
        boolean interrupted = false;
        sleep.lock();
        try {
            sleepingConverters++;  // before the recount: a leaving accessor sees it or we see its exit
            while (inFlight(start, end) != 0) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                try {
                    quiet.awaitNanos(left);
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            return true;
        } finally {
            sleepingConverters--;
            sleep.unlock();
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** {@return the sum of the in-flight counters of the stripes of pages {@code [start, end)}} */
    public long inFlight(long start, long end) {
        long firstGroup = start >>> GROUP_SHIFT;
        long groups = Math.min(STRIPES, ((end - 1) >>> GROUP_SHIFT) - firstGroup + 1);
        long sum = 0;
        for (long g = firstGroup; g < firstGroup + groups; g++) {
            sum += inFlight.get((int) (g & (STRIPES - 1)) * PAD);
        }
        return sum;
    }

    /**
     * {@return the first page of {@code [start, end)} that an access in flight may be using, or
     * -1 when none is} Counters are kept per group of {@link #GROUP_PAGES} pages, so this is the
     * first page of the range in the first group whose counter is not zero: the offset a
     * refusal names, as the kernel names the first page with an unexpected reference.
     */
    public long firstBusy(long start, long end) {
        long firstGroup = start >>> GROUP_SHIFT;
        long lastGroup = (end - 1) >>> GROUP_SHIFT;
        long groups = Math.min(STRIPES, lastGroup - firstGroup + 1);
        for (long g = firstGroup; g < firstGroup + groups; g++) {
            if (inFlight.get((int) (g & (STRIPES - 1)) * PAD) != 0) {
                return Math.max(start, g << GROUP_SHIFT);
            }
        }
        return -1;
    }

    /** {@return true when no access is in flight anywhere} */
    public boolean isQuiet() {
        return inFlight(0, (long) STRIPES * GROUP_PAGES) == 0;
    }

    private void add(long start, long end, int delta) {
        long firstGroup = start >>> GROUP_SHIFT;
        long groups = Math.min(STRIPES, ((end - 1) >>> GROUP_SHIFT) - firstGroup + 1);
        for (long g = firstGroup; g < firstGroup + groups; g++) {
            inFlight.getAndAdd((int) (g & (STRIPES - 1)) * PAD, delta);
        }
    }

    private void wakeConverters() {
        if (sleepingConverters != 0) {
            sleep.lock();
            try {
                quiet.signalAll();
            } finally {
                sleep.unlock();
            }
        }
    }

    private void awaitUnblocked(long start, long end) {
        sleep.lock();
        try {
            Blocked b;
            while ((b = blocked) != null && b != CLOSED && b.overlaps(start, end)) {
                unblocked.awaitUninterruptibly();
            }
        } finally {
            sleep.unlock();
        }
    }
}
