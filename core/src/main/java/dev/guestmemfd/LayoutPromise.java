package dev.guestmemfd;

import static dev.guestmemfd.SnapshotFormat.PRIVATE;
import static dev.guestmemfd.SnapshotFormat.PRIVATE_HOLE;
import static dev.guestmemfd.SnapshotFormat.SHARED;
import static dev.guestmemfd.SnapshotFormat.SHARED_HOLE;
import static dev.guestmemfd.SnapshotFormat.bad;

import java.util.BitSet;
import java.util.List;

/**
 * What a stream's layout record (version 4) promises, and the check that the records after it
 * keep the promise: every page the layout names is named by exactly one later record, of the
 * kind its final state calls for (shared or private bytes where it is allocated, a shared or
 * private hole where it is not), and no page outside the layout is named. Because of it a
 * reader knows each page's final state before its bytes arrive, and the first record naming a
 * page is its last.
 *
 * @implSpec Not thread safe: one reader checks the records in stream order.
 */
final class LayoutPromise {
    private final List<PageRun> runs;
    private final BitSet named = new BitSet();
    private final BitSet allocated = new BitSet();
    private final BitSet privatePages = new BitSet();
    private final BitSet delivered = new BitSet();

    LayoutPromise(List<PageRun> runs) {
        this.runs = runs;
        for (PageRun run : runs) {
            int first = (int) (run.offset() / GuestMemory.PAGE_SIZE);
            int end = (int) ((run.offset() + run.length()) / GuestMemory.PAGE_SIZE);
            named.set(first, end);
            allocated.set(first, end, run.allocated());
            privatePages.set(first, end, run.attribute() == Attribute.PRIVATE);
        }
    }

    /** {@return the layout's runs} */
    List<PageRun> runs() {
        return runs;
    }

    /** {@return true when the layout says the page at index {@code page} holds bytes} */
    boolean allocated(int page) {
        return allocated.get(page);
    }

    /**
     * Checks that record {@code number}, of {@code kind}, naming pages {@code [first, end)},
     * keeps the promise, and counts those pages delivered.
     *
     * @throws GuestMemoryException {@code EBADMSG} when it does not
     */
    void check(long number, int kind, int first, int end, String op) {
        boolean wantsAllocated = kind == SHARED || kind == PRIVATE;
        boolean wantsPrivate = kind == PRIVATE || kind == PRIVATE_HOLE;
        if (kind != SHARED && kind != PRIVATE && kind != SHARED_HOLE && kind != PRIVATE_HOLE) {
            throw bad(op, "record " + number + " is not a page record, after the layout");
        }
        if (named.nextClearBit(first) < end) {
            throw bad(op, "record " + number + " names pages the layout does not");
        }
        int again = delivered.nextSetBit(first);
        if (again >= 0 && again < end) {
            throw bad(op, "record " + number + " names page " + again + " a second time, after the layout");
        }
        if (!sameOver(allocated, first, end, wantsAllocated) || !sameOver(privatePages, first, end, wantsPrivate)) {
            throw bad(op, "record " + number + " does not agree with the layout");
        }
        delivered.set(first, end);
    }

    /**
     * Checks, at the end of the stream, that every page the layout names was delivered.
     *
     * @throws GuestMemoryException {@code EBADMSG} when one was not
     */
    void checkComplete(String op) {
        BitSet missing = (BitSet) named.clone();
        missing.andNot(delivered);
        if (!missing.isEmpty()) {
            throw bad(op, "the stream ends without page " + missing.nextSetBit(0) + ", which its layout names");
        }
    }

    private static boolean sameOver(BitSet bits, int first, int end, boolean value) {
        int other = value ? bits.nextClearBit(first) : bits.nextSetBit(first);
        return other < 0 || other >= end;
    }
}
