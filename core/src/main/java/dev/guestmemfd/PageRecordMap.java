package dev.guestmemfd;

import java.util.Arrays;

/**
 * Which record of a snapshot file holds the last bytes of each page: a page-indexed table of
 * record numbers whose memory follows what the file holds, not what its header claims. The
 * table is cut into chunks of {@value #CHUNK_PAGES} pages, each made on the first page of it a
 * record gives bytes to; a page of a chunk never made holds no record. A 20 KB file whose
 * unauthenticated header claims 4 TiB so costs a few chunks, not an entry for each of a
 * billion pages (the header is checked only by the digest at the stream's end, after the index).
 */
final class PageRecordMap {
    /** No record: the page is a hole, or no record names it. */
    static final int NONE = -1;
    private static final int CHUNK_SHIFT = 16;
    static final int CHUNK_PAGES = 1 << CHUNK_SHIFT;
    private static final int CHUNK_MASK = CHUNK_PAGES - 1;

    private final int pages;
    private final int[][] chunks;

    /** @param pages the file's pages, 0 or more */
    PageRecordMap(int pages) {
        this.pages = pages;
        this.chunks = new int[(int) (((long) pages + CHUNK_PAGES - 1) >>> CHUNK_SHIFT)][];
    }

    /** {@return the number of pages} */
    int pages() {
        return pages;
    }

    /** {@return the record holding page {@code page}'s last bytes, or {@link #NONE}} */
    int get(int page) {
        int[] chunk = chunks[page >>> CHUNK_SHIFT];
        return chunk == null ? NONE : chunk[page & CHUNK_MASK];
    }

    /** Gives pages {@code [from, to)} to {@code record}, or to none ({@link #NONE}: a hole). */
    void fill(int from, int to, int record) {
        for (int p = from; p < to; ) {
            int c = p >>> CHUNK_SHIFT;
            int chunkEnd = (int) Math.min(to, ((long) c + 1) << CHUNK_SHIFT);
            int[] chunk = chunks[c];
            if (chunk == null && record != NONE) {
                chunk = new int[CHUNK_PAGES];
                Arrays.fill(chunk, NONE);
                chunks[c] = chunk;
            }
            if (chunk != null) {
                Arrays.fill(chunk, p & CHUNK_MASK, ((chunkEnd - 1) & CHUNK_MASK) + 1, record);
            }
            p = chunkEnd;
        }
    }
}
