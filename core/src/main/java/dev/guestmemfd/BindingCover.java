package dev.guestmemfd;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * The owners' bindings that together cover one file exactly, each page once, in offset order:
 * how a snapshot reaches every page of a file, shared and private, as its owners do. A VM's
 * memslots are such a cover; so is one binding of the whole file.
 */
final class BindingCover {
    private static final MemorySegment ZERO_PAGE = MemorySegment.ofArray(new byte[(int) GuestMemory.PAGE_SIZE]);

    private final GuestMemory memory;
    private final List<Binding> bindings;

    private BindingCover(GuestMemory memory, List<Binding> bindings) {
        this.memory = memory;
        this.bindings = bindings;
    }

    /**
     * {@return the cover that {@code owners} make, in offset order}
     *
     * @throws GuestMemoryException {@code EINVAL} for a null or empty list, a null binding,
     *                              bindings of different files, or bindings that overlap
     *                              (the same one twice included) or leave a page uncovered
     */
    static BindingCover of(List<Binding> owners, String op) {
        if (owners == null || owners.isEmpty()) {
            throw new GuestMemoryException(Errno.EINVAL, op, "no binding given: the owners' bindings must cover the whole file", -1);
        }
        List<Binding> sorted = new ArrayList<>(owners.size());
        for (Binding b : owners) {
            if (b == null) {
                throw new GuestMemoryException(Errno.EINVAL, op, "a binding is null", -1);
            }
            sorted.add(b);
        }
        GuestMemory memory = sorted.getFirst().memory();
        for (Binding b : sorted) {
            if (b.memory() != memory) {
                throw new GuestMemoryException(Errno.EINVAL, op, "the bindings belong to different files", -1);
            }
        }
        sorted.sort(Comparator.comparingLong(Binding::offset));
        long covered = 0;
        for (Binding b : sorted) {
            if (b.offset() < covered) {
                throw new GuestMemoryException(Errno.EINVAL, op, "bindings overlap at file offset " + b.offset()
                        + " (each page must be covered once)", b.offset());
            }
            if (b.offset() > covered) {
                throw new GuestMemoryException(Errno.EINVAL, op, "no binding covers file offset " + covered, covered);
            }
            covered += b.length();
        }
        if (covered != memory.size()) {
            throw new GuestMemoryException(Errno.EINVAL, op, "no binding covers file offset " + covered
                    + " of the " + memory.size() + "-byte file", covered);
        }
        return new BindingCover(memory, List.copyOf(sorted));
    }

    /** {@return the file} */
    GuestMemory memory() {
        return memory;
    }

    /** {@return the binding that covers file offset {@code at}} */
    Binding at(long at) {
        int low = 0;
        int high = bindings.size() - 1;
        while (low < high) {
            int mid = (low + high + 1) >>> 1;
            if (bindings.get(mid).offset() <= at) {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        return bindings.get(low);
    }

    /**
     * Copies {@code length} bytes of {@code source} into the pages at {@code at}, across bindings where it spans several.
     *
     * @throws GuestMemoryException {@code EBADF} when the file was closed (or a binding let go) meanwhile: the owner's
     *                              view is gone, which the memory API reports as a closed segment
     */
    void copyIn(long at, byte[] source, int length) {
        for (int done = 0; done < length; ) {
            Binding b = at(at + done);
            int piece = (int) Math.min(length - done, b.offset() + b.length() - (at + done));
            try {
                MemorySegment.copy(source, done, b.pages(), ValueLayout.JAVA_BYTE, at + done - b.offset(), piece);
            } catch (IllegalStateException closed) {
                throw new GuestMemoryException(Errno.EBADF, "restore", "the file was closed during the restore", at + done);
            }
            done += piece;
        }
    }

    /** {@return true when every byte of the page-aligned range {@code [at, at + length)} reads zero} */
    boolean readsZero(long at, long length) {
        long page = GuestMemory.PAGE_SIZE;
        for (long p = at; p < at + length; p += page) {
            Binding b = at(p);
            if (b.pages().asSlice(p - b.offset(), page).mismatch(ZERO_PAGE) >= 0) {
                return false;
            }
        }
        return true;
    }
}
