package dev.guestmemfd.internal;

import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;

/**
 * Which pages are private, as maximal runs, readable without the file's lock: the copy of
 * the attributes that lock-free host accesses consult.
 *
 * <p>A writer changes only the pages of the range it is given, and the {@link RangeGate}
 * keeps readers out of that range meanwhile; every intermediate state of the map is correct
 * for every page outside it. That is why a split puts the right part under its new key
 * before the left part shrinks, and a merge extends the left run before it drops the right
 * one: a reader of any other page always finds its run.
 *
 * @implSpec Readers: any thread, no lock. Writers: one at a time (the file's lock), each over
 * a range that the gate blocks. Memory: one map entry per run.
 */
public final class PrivateRuns {
    /** Run start page to run end page (exclusive); runs are disjoint and never adjacent. */
    private final ConcurrentSkipListMap<Long, Long> runs = new ConcurrentSkipListMap<>();

    /** @param allPrivate whether pages {@code [0, pages)} start private */
    public PrivateRuns(boolean allPrivate, long pages) {
        if (allPrivate && pages > 0) {
            runs.put(0L, pages);
        }
    }

    /** {@return the first private page in {@code [start, end)}, or -1} */
    public long firstPrivate(long start, long end) {
        if (runs.isEmpty()) {
            return -1;  // a file with no private page: no search, no boxing
        }
        Map.Entry<Long, Long> before = runs.floorEntry(start);
        if (before != null && before.getValue() > start) {
            return start;
        }
        Long next = runs.higherKey(start);
        return next != null && next < end ? next : -1;
    }

    /** Makes pages {@code [start, end)} private or shared. */
    public void set(long start, long end, boolean priv) {
        if (start >= end) {
            return;
        }
        // The part of a run that reaches past the end keeps its pages under a key of its own.
        Map.Entry<Long, Long> last = runs.lowerEntry(end);
        if (last != null && last.getValue() > end) {
            runs.put(end, last.getValue());
        }
        runs.subMap(start, end).clear();
        Map.Entry<Long, Long> left = runs.lowerEntry(start);
        if (priv) {
            long runStart = start;
            if (left != null && left.getValue() >= start) {
                runStart = left.getKey();
            }
            runs.put(runStart, end);
            Long right = runs.get(end);
            if (right != null) {
                runs.put(runStart, right);
                runs.remove(end);
            }
        } else if (left != null && left.getValue() > start) {
            runs.put(left.getKey(), start);
        }
    }

    /**
     * {@return an estimate of the heap bytes this copy takes} A skip-list entry per run: its
     * node (24 bytes), two boxed longs (16 each) and on average a quarter of an index node
     * (32 bytes): 64 bytes. Far more per run than {@link PageBits} (2 bytes per boundary),
     * the price of lock-free readers; a compact lock-free form is work still to do.
     */
    public long bytesUsed() {
        return runs.size() * 64L;
    }

    /** {@return the number of runs} */
    public int runs() {
        return runs.size();
    }
}
