package dev.guestmemfd;

import dev.guestmemfd.linux.Mman;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * The fetch unit of a lazy restore into a file of huge pages: the whole huge page. The kernel
 * fills a hugetlb mapping's missing page only whole ({@code UFFDIO_COPY} of one huge page,
 * aligned; a 4 KiB copy there is {@code EINVAL}, and {@code UFFDIO_ZEROPAGE} is refused on
 * hugetlb altogether), so a fault anywhere in a huge page is served by assembling all of it
 * first: each 4 KiB page the source has bytes for from its extent, zeros for holes and for
 * pages the source does not name.
 *
 * <p>Why zeros for the pages the source does not name, which a lazy restore otherwise leaves as
 * the target had them: the target of a lazy restore holds no memory when it starts (it is
 * refused otherwise), so what such a page had is zeros, and copying zeros there keeps it. The
 * page's attribute is the target's, untouched. What changes is only that the page is now
 * allocated, as every page of a huge page is once any of it is.
 *
 * <p>The staging buffers are anonymous mappings of one huge page each, taken per fetch from a
 * small pool (as many as fetches ever ran at once), and cleared before they go back: zeroed
 * (up to 2 MiB) or given back to the kernel ({@code MADV_DONTNEED}, which also zeroes them,
 * for 1 GiB units, so that a fetcher does not keep a gibibyte resident). Private bytes thus
 * never linger in them.
 *
 * @implSpec Thread safe: any number of threads assemble at once, each into its own buffer.
 */
final class HugePageFetch {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    /** Units up to this size are cleared by writing zeros; larger ones are given back to the kernel. */
    private static final long FILL_LIMIT = 2L << 20;
    private static final int ANONYMOUS = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_NORESERVE;

    private final long unit;
    private final PageSource source;
    private final MemorySegment zeros;
    private final ConcurrentLinkedQueue<MemorySegment> idle = new ConcurrentLinkedQueue<>();

    /**
     * @param unit the huge page size: a power of two, a multiple of the page
     */
    HugePageFetch(long unit, PageSource source) {
        if (unit <= PAGE || unit % PAGE != 0 || Long.bitCount(unit) != 1) {
            throw new IllegalArgumentException("a huge page unit is a power of two above the page: " + unit);
        }
        this.unit = unit;
        this.source = source;
        // Never written: every read of it finds the kernel's zero page, so it costs no memory.
        this.zeros = Mman.mmap(Arena.ofAuto(), unit, Mman.PROT_READ, ANONYMOUS, -1, 0);
    }

    /** {@return the unit, bytes} */
    long unit() {
        return unit;
    }

    /** {@return one unit of zeros, read only: the source of a copy that answers a fault on a hole} */
    MemorySegment zeros() {
        return zeros;
    }

    /** {@return a zeroed staging buffer of one unit for the calling thread; give it back with {@link #giveBack}} */
    MemorySegment take() {
        MemorySegment buffer = idle.poll();
        return buffer != null ? buffer : Mman.mmap(Arena.ofAuto(), unit, Mman.PROT_READ | Mman.PROT_WRITE, ANONYMOUS, -1, 0);
    }

    /** Clears {@code buffer} and returns it to the pool. */
    void giveBack(MemorySegment buffer) {
        if (unit <= FILL_LIMIT) {
            buffer.fill((byte) 0);
        } else {
            Mman.madvise(buffer, Mman.MADV_DONTNEED);
        }
        idle.add(buffer);
    }

    /**
     * Assembles the unit at file offset {@code at} into {@code into} (zeroed, one unit long):
     * every page with bytes from its extent, read straight into place where the extent lies
     * inside the unit, through {@code chunk} (one extent long at least, left zeroed) where it
     * reaches past the unit's edge; the other pages stay zero.
     *
     * @return the pages of the unit that have bytes in the source
     * @throws GuestMemoryException {@code EBADMSG} from the source: a sealed record that does
     *                              not open, a record cut short
     * @throws IOException when the source cannot be read
     */
    int assemble(long at, MemorySegment into, MemorySegment chunk) throws IOException {
        long end = at + unit;
        int withBytes = 0;
        long offset = at;
        while (offset < end) {
            PageSource.Extent extent = source.extent(offset);
            if (extent == null) {
                offset += PAGE;  // a hole, or a page the source does not name: zero
                continue;
            }
            long extentEnd = extent.offset() + extent.length();
            long from = Math.max(extent.offset(), at);
            long to = Math.min(extentEnd, end);
            if (extent.offset() >= at && extentEnd <= end) {
                source.read(extent, into.asSlice(extent.offset() - at, extent.length()));
            } else {
                // The extent's record straddles the edge of the unit: the neighbour unit reads
                // it again for its own part; each page still lands once.
                try {
                    source.read(extent, chunk);
                    MemorySegment.copy(chunk, from - extent.offset(), into, from - at, to - from);
                } finally {
                    chunk.asSlice(0, extent.length()).fill((byte) 0);
                }
            }
            withBytes += (int) ((to - from) / PAGE);
            offset = to;
        }
        return withBytes;
    }
}
