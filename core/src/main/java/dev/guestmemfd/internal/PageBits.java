package dev.guestmemfd.internal;

import java.util.Arrays;
import java.util.Map;
import java.util.function.LongConsumer;

/**
 * One bit per page of a file of any size, in memory that follows the number of changes, not
 * the number of pages, and is at most one bit per page in the worst case.
 *
 * <p>Pages are grouped in chunks of {@link #CHUNK_PAGES} (128 MiB). A chunk whose pages all
 * have the same bit costs nothing of its own: its bit is one of the runs of a {@link RunMap}
 * over chunk numbers. A mixed chunk has a container: the positions where its bit flips, two
 * bytes each, or, once that would be larger, a bitmap of 4 KiB. So a conversion of a whole
 * terabyte touches the chunk runs and nothing else, a scattered pattern costs two bytes per
 * boundary, and every other page private costs one bit per page.
 *
 * <p>Not thread safe: the owning file guards it with its lock.
 */
public final class PageBits {
    static final int CHUNK_SHIFT = 15;
    /** Pages per chunk. */
    public static final int CHUNK_PAGES = 1 << CHUNK_SHIFT;
    private static final int MASK = CHUNK_PAGES - 1;
    /** A run container larger than this many flips becomes a bitmap (same bytes). */
    static final int MAX_FLIPS = CHUNK_PAGES / 16;

    /** The bit of each chunk without a container. */
    private final RunMap uniform;
    // A concurrent map, though writers hold the file's lock: host accesses read these bits
    // optimistically while a conversion of other pages may change them (GuestMemory's
    // StampedLock detects that and reads again), and a concurrent map can neither loop nor
    // break under such a read, as a TreeMap in mid-rotation could.
    private final java.util.concurrent.ConcurrentSkipListMap<Long, Container> mixed = new java.util.concurrent.ConcurrentSkipListMap<>();
    /** Where the file ends: a range up to it extends to the end of its chunk, so it needs no container. */
    private final long pages;

    /**
     * @param initial the bit of every page at first
     * @param pages   the number of pages; none past it is ever asked about
     */
    public PageBits(boolean initial, long pages) {
        this.uniform = new RunMap(initial);
        this.pages = pages;
    }

    /** {@return the bit of {@code page}} */
    public boolean isSet(long page) {
        Container c = mixed.get(page >>> CHUNK_SHIFT);
        return c == null ? uniform.isSet(page >>> CHUNK_SHIFT) : c.get((int) (page & MASK));
    }

    /** Sets the bits of pages {@code [start, end)} to {@code value}. */
    public void set(long start, long end, boolean value) {
        if (start >= end) {
            return;
        }
        if (end >= pages) {
            end = ((pages + MASK) >>> CHUNK_SHIFT) << CHUNK_SHIFT;
        }
        long firstChunk = start >>> CHUNK_SHIFT;
        long lastChunk = (end - 1) >>> CHUNK_SHIFT;
        if (firstChunk == lastChunk) {
            setWithin(firstChunk, (int) (start & MASK), (int) ((end - 1) & MASK) + 1, value);
            return;
        }
        long fullFrom = (start & MASK) == 0 ? firstChunk : firstChunk + 1;
        long fullTo = (end & MASK) == 0 ? lastChunk + 1 : lastChunk;
        if (fullFrom != firstChunk) {
            setWithin(firstChunk, (int) (start & MASK), CHUNK_PAGES, value);
        }
        if (fullFrom < fullTo) {
            uniform.set(fullFrom, fullTo, value);
            mixed.subMap(fullFrom, fullTo).clear();
        }
        if (fullTo == lastChunk) {
            setWithin(lastChunk, 0, (int) (end & MASK), value);
        }
    }

    private void setWithin(long chunk, int from, int to, boolean value) {
        Container c = mixed.get(chunk);
        if (c == null) {
            boolean current = uniform.isSet(chunk);
            if (current == value) {
                return;
            }
            if (from == 0 && to == CHUNK_PAGES) {
                uniform.set(chunk, chunk + 1, value);
                return;
            }
            c = new Runs(current);
        }
        c = c.set(from, to, value);
        if (c.isUniform()) {
            mixed.remove(chunk);
            uniform.set(chunk, chunk + 1, c.get(0));
        } else {
            mixed.put(chunk, c);
        }
    }

    /** {@return the first set page in {@code [start, end)}, or -1} */
    public long firstSet(long start, long end) {
        return first(start, end, true);
    }

    /** {@return the first clear page in {@code [start, end)}, or -1} */
    public long firstClear(long start, long end) {
        return first(start, end, false);
    }

    private long first(long start, long end, boolean value) {
        long p = start;
        while (p < end) {
            long chunk = p >>> CHUNK_SHIFT;
            long base = chunk << CHUNK_SHIFT;
            Container c = mixed.get(chunk);
            if (c != null) {
                int found = c.first(value, (int) (p - base), (int) Math.min(CHUNK_PAGES, end - base));
                if (found >= 0) {
                    return base + found;
                }
                p = base + CHUNK_PAGES;
                continue;
            }
            if (uniform.isSet(chunk) == value) {
                return p;
            }
            Long nextMixed = mixed.ceilingKey(chunk + 1);
            long limit = Math.min(nextMixed == null ? Long.MAX_VALUE : nextMixed, ((end - 1) >>> CHUNK_SHIFT) + 1);
            long nextUniform = value ? uniform.firstSet(chunk + 1, limit) : uniform.firstClear(chunk + 1, limit);
            long next = nextUniform >= 0 ? nextUniform : limit;
            if (next == Long.MAX_VALUE) {
                return -1;
            }
            p = next << CHUNK_SHIFT;
        }
        return -1;
    }

    /** Calls {@code boundary} with each page in {@code [start, end)} whose bit differs from the page before it. */
    public void forEachFlip(long start, long end, LongConsumer boundary) {
        if (start >= end) {
            return;
        }
        // Invariant: the page before p has the bit `current`.
        boolean current = isSet(start > 0 ? start - 1 : 0);
        long p = start;
        while (p < end) {
            long next = current ? firstClear(p, end) : firstSet(p, end);
            if (next < 0) {
                return;
            }
            boundary.accept(next);
            current = !current;
            p = next + 1;
        }
    }

    /** Calls {@code run} for each maximal run of pages whose bit is {@code value} within {@code [start, end)}. */
    public void forEachRun(long start, long end, boolean value, RunMap.RunConsumer run) {
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

    /** {@return the heap bytes this map holds: chunk runs, containers and their entries} */
    public long bytesUsed() {
        long bytes = 16 + uniform.bytesUsed();
        for (Map.Entry<Long, Container> e : mixed.entrySet()) {
            bytes += 48 + e.getValue().bytesUsed();  // a tree entry and its boxed key
        }
        return bytes;
    }

    /** The pages of one mixed chunk. */
    private sealed interface Container permits Runs, Bitmap {
        boolean get(int i);

        /** {@return the container after setting [from, to): this one, or a bitmap that replaced it} */
        Container set(int from, int to, boolean value);

        int first(boolean value, int from, int to);

        boolean isUniform();

        long bytesUsed();
    }

    /** Sorted positions where the bit flips, as in {@link RunMap}, two bytes each. */
    private static final class Runs implements Container {
        private final boolean initial;
        private char[] flips = new char[4];
        private int count;

        Runs(boolean initial) {
            this.initial = initial;
        }

        private int flipsUpTo(int i) {
            int lo = 0;
            int hi = count;
            while (lo < hi) {
                int mid = (lo + hi) >>> 1;
                if (flips[mid] <= i) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            return lo;
        }

        @Override
        public boolean get(int i) {
            return initial ^ ((flipsUpTo(i) & 1) == 1);
        }

        @Override
        public Container set(int from, int to, boolean value) {
            boolean before = from == 0 ? initial : get(from - 1);
            boolean after = to == CHUNK_PAGES ? value : get(to);
            int lo = from == 0 ? 0 : flipsUpTo(from - 1);
            int hi = to == CHUNK_PAGES ? count : flipsUpTo(to);
            char[] middle = new char[2];
            int m = 0;
            if (before != value) {
                middle[m++] = (char) from;
            }
            if (to < CHUNK_PAGES && value != after) {
                middle[m++] = (char) to;
            }
            int newCount = lo + m + (count - hi);
            if (newCount > MAX_FLIPS) {
                Bitmap bitmap = new Bitmap(this);
                return bitmap.set(from, to, value);
            }
            if (newCount > flips.length) {
                flips = Arrays.copyOf(flips, Math.min(MAX_FLIPS, Math.max(newCount, flips.length * 2)));
            }
            System.arraycopy(flips, hi, flips, lo + m, count - hi);
            System.arraycopy(middle, 0, flips, lo, m);
            count = newCount;
            return this;
        }

        @Override
        public int first(boolean value, int from, int to) {
            if (from >= to) {
                return -1;
            }
            if (get(from) == value) {
                return from;
            }
            int next = flipsUpTo(from);
            return next < count && flips[next] < to ? flips[next] : -1;
        }

        @Override
        public boolean isUniform() {
            return count == 0;
        }

        @Override
        public long bytesUsed() {
            return 32 + 2L * flips.length;
        }
    }

    /** One bit per page: 4 KiB for a chunk of 32768 pages. */
    private static final class Bitmap implements Container {
        private final long[] words = new long[CHUNK_PAGES / 64];

        Bitmap(Runs runs) {
            for (int i = 0; i < CHUNK_PAGES; ) {
                boolean v = runs.get(i);
                int next = runs.first(!v, i, CHUNK_PAGES);
                int end = next < 0 ? CHUNK_PAGES : next;
                if (v) {
                    setRange(i, end, true);
                }
                i = end;
            }
        }

        @Override
        public boolean get(int i) {
            return (words[i >>> 6] & (1L << i)) != 0;
        }

        private void setRange(int from, int to, boolean value) {
            for (int i = from; i < to; ) {
                int word = i >>> 6;
                int bit = i & 63;
                int n = Math.min(64 - bit, to - i);
                long mask = (n == 64 ? -1L : ((1L << n) - 1)) << bit;
                words[word] = value ? words[word] | mask : words[word] & ~mask;
                i += n;
            }
        }

        @Override
        public Container set(int from, int to, boolean value) {
            setRange(from, to, value);
            return this;
        }

        @Override
        public int first(boolean value, int from, int to) {
            for (int i = from; i < to; ) {
                int word = i >>> 6;
                long w = (value ? words[word] : ~words[word]) & (-1L << (i & 63));
                if (w != 0) {
                    int found = (word << 6) + Long.numberOfTrailingZeros(w);
                    return found < to ? found : -1;
                }
                i = (word + 1) << 6;
            }
            return -1;
        }

        @Override
        public boolean isUniform() {
            long first = words[0];
            if (first != 0 && first != -1L) {
                return false;
            }
            for (long w : words) {
                if (w != first) {
                    return false;
                }
            }
            return true;
        }

        @Override
        public long bytesUsed() {
            return 16 + 8L * words.length;
        }
    }
}
