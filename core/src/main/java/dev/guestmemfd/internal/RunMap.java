package dev.guestmemfd.internal;

import java.util.Arrays;
import java.util.function.LongConsumer;

/**
 * One bit of state for every page (private or shared; allocated or not), kept as the sorted
 * page indices at which the bit flips: memory grows with the number of runs, never with the
 * number of pages, and setting a whole file costs the same as setting one page.
 *
 * <p>Page {@code p} is set when {@code initial} XOR (the number of flips at or below
 * {@code p} is odd). Not thread safe: the owning file guards it with its lock.
 */
public final class RunMap {
    private final boolean initial;
    private long[] flips = new long[8];
    private int count;

    public RunMap(boolean initial) {
        this.initial = initial;
    }

    /** {@return the number of flips at or below {@code page}} */
    private int flipsUpTo(long page) {
        int lo = 0;
        int hi = count;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (flips[mid] <= page) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    /** {@return true when {@code page} is set} */
    public boolean isSet(long page) {
        return initial ^ ((flipsUpTo(page) & 1) == 1);
    }

    /** Sets or clears pages {@code [start, end)}. */
    public void set(long start, long end, boolean value) {
        if (start >= end) {
            return;
        }
        boolean before = start > 0 && isSet(start - 1);
        if (start == 0) {
            before = initial;
        }
        boolean after = isSet(end);
        int from = flipsUpTo(start - 1);   // first flip >= start
        int to = flipsUpTo(end);           // first flip > end
        long[] middle = new long[2];
        int m = 0;
        if (before != value) {
            middle[m++] = start;
        }
        if (value != after) {
            middle[m++] = end;
        }
        int newCount = from + m + (count - to);
        if (newCount > flips.length) {
            flips = Arrays.copyOf(flips, Math.max(newCount, flips.length * 2));
        }
        System.arraycopy(flips, to, flips, from + m, count - to);
        System.arraycopy(middle, 0, flips, from, m);
        count = newCount;
    }

    /** {@return the first set page in {@code [start, end)}, or -1 when none is} */
    public long firstSet(long start, long end) {
        return first(start, end, true);
    }

    /** {@return the first clear page in {@code [start, end)}, or -1 when none is} */
    public long firstClear(long start, long end) {
        return first(start, end, false);
    }

    private long first(long start, long end, boolean wantSet) {
        if (start >= end) {
            return -1;
        }
        if (isSet(start) == wantSet) {
            return start;
        }
        int next = flipsUpTo(start);  // the first flip after start
        return next < count && flips[next] < end ? flips[next] : -1;
    }

    /** Receives a run of pages {@code [start, end)}. */
    public interface RunConsumer {
        void accept(long start, long end);
    }

    /** Calls {@code run} for each maximal run of set (or clear) pages within {@code [start, end)}. */
    public void forEachRun(long start, long end, boolean value, RunConsumer run) {
        long p = start;
        while (p < end) {
            long runStart = value ? firstSet(p, end) : firstClear(p, end);
            if (runStart < 0) {
                return;
            }
            long runEnd = value ? firstClear(runStart, end) : firstSet(runStart, end);
            if (runEnd < 0) {
                runEnd = end;
            }
            run.accept(runStart, runEnd);
            p = runEnd;
        }
    }

    /** Calls {@code boundary} with each page index in {@code [start, end)} where the bit flips. */
    public void forEachFlip(long start, long end, LongConsumer boundary) {
        for (int i = flipsUpTo(start - 1); i < count && flips[i] < end; i++) {
            boundary.accept(flips[i]);
        }
    }

    /** {@return the bytes this map holds on the heap for its runs} */
    public long bytesUsed() {
        return 16 + (long) flips.length * Long.BYTES;
    }
}
