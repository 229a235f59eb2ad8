package dev.guestmemfd.internal;

import dev.guestmemfd.linux.LinuxException;
import dev.guestmemfd.linux.Mman;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * The host's own mapping of a guest memory file, apart from the owner's: every segment the
 * library hands to host code (leases, pins, scoped accesses, copies) is a view of it, and
 * revoking pages here changes nothing the owner sees.
 *
 * <p>Revoking a range replaces its pages, in the page tables, with anonymous zero pages
 * ({@code MAP_FIXED}, one step): whatever still holds an address there, a native call
 * included, reads zeros and writes into a page of its own that the file never sees, and
 * nothing it does can fault. The replacement is chosen over the alternatives because it is
 * the only one under which no user-space access can kill the JVM: {@code PROT_NONE} gives
 * SIGSEGV and a mapping past the end of an empty file gives SIGBUS, both fatal inside native
 * code. Its cost: a system call that succeeds into a dummy page instead of failing with
 * {@code EFAULT}, and a page of memory for each dummy page written. Restoring maps the file
 * back at the same address.
 *
 * <p>The addresses stay reserved until nothing handed out can reach them: {@link #retire}
 * swaps the whole view to anonymous pages, and the view is unmapped only when every arena
 * that a native call held (a "held" reference) has closed and no access is in flight.
 *
 * <p>On a hugetlb file the kernel maps, unmaps and replaces only whole huge pages
 * ({@code mmap} or {@code mprotect} at a 4 KiB offset gives EINVAL), so this view could not
 * take one 4 KiB page away and leave its neighbours. There every lease and pin gets a mapping
 * of its own instead (of the huge pages under it, the segment a slice of it), and revocation
 * replaces, in the references that a native call still holds, the huge pages over the range
 * that turns private; this view, which only the library's scoped accesses reach (the gate
 * keeps conversions and them apart), is never replaced. A revoked reference's huge page is
 * mapped back only once all of it is shared again.
 *
 * @implSpec Revoke, restore, expose and retire under the file's lock; held references and the
 * final unmapping are thread safe.
 */
public final class HostView {
    private static final int ANONYMOUS = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_NORESERVE;
    private static final int RW = Mman.PROT_READ | Mman.PROT_WRITE;

    /** A reference whose arena could not be closed because a native call held it. */
    private record Held(Arena arena, long offset, long length) {
    }

    /** A lease's or pin's own mapping of the huge pages under it (hugetlb files only). */
    private static final class Reference {
        /** The huge pages mapped. */
        final long fileOffset;
        final long length;
        /** The range handed out: only a conversion of a page in it revokes this reference. */
        final long segmentOffset;
        final long segmentLength;
        long address;
        /** Huge pages of this mapping now replaced by anonymous ones, by index from its start. */
        final java.util.BitSet replaced = new java.util.BitSet();

        Reference(long fileOffset, long length, long segmentOffset, long segmentLength) {
            this.fileOffset = fileOffset;
            this.length = length;
            this.segmentOffset = segmentOffset;
            this.segmentLength = segmentLength;
        }
    }

    private final int fd;
    private final long size;
    /** The file's huge page size, or 0 when pages are 4 KiB and this view is revoked in place. */
    private final long huge;
    /** Guards {@link #references}, their replaced pages and their unmapping; taken after {@code this}. */
    private final Object referenceLock = new Object();
    private final List<Reference> references = new ArrayList<>();
    /** The file's punch lock, or null: the residency kept for a reference going away must not race a punch. */
    private final Object punchLock;
    private final long base;
    private final MemorySegment pages;
    /** Pages whose lease or pin was handed out since they were last revoked: a raw address may reach them. */
    private final PageBits exposed;
    /** Pages now backed by anonymous pages instead of the file. */
    private final PageBits replaced;
    private final List<Held> held = new ArrayList<>();  // guarded by itself
    private volatile boolean retired;  // written under this and referenceLock
    private boolean unmapped;  // guarded by this

    /** Maps all of {@code fd} ({@code size} bytes) for the host. */
    public HostView(int fd, long size) {
        this(fd, size, 0, null);
    }

    /** Maps all of {@code file} for the host, with references of their own where its pages are huge. */
    public HostView(BackingFile file) {
        this(file.fd(), file.size(), file.blockSize() > Mman.PAGE_SIZE ? file.blockSize() : 0,
                file instanceof BackingFile.Hugetlb h ? h.punchLock() : null);
        if (file instanceof BackingFile.Hugetlb h) {
            h.alsoMappedBy(this::addResident);
        }
    }

    private HostView(int fd, long size, long huge, Object punchLock) {
        this.fd = fd;
        this.size = size;
        this.huge = huge;
        this.punchLock = punchLock;
        this.pages = Mman.mmapUntied(size, RW, Mman.MAP_SHARED | Mman.MAP_NORESERVE, fd, 0);
        this.base = pages.address();
        long count = size / Mman.PAGE_SIZE;
        this.exposed = new PageBits(false, count);
        this.replaced = new PageBits(false, count);
    }

    /** {@return the heap bytes of the view's page bits (exposed and replaced pages)} */
    public synchronized long bytesUsed() {
        return exposed.bytesUsed() + replaced.bytesUsed();
    }

    /** {@return the whole view, for the library's own bounded accesses; never handed out} */
    public MemorySegment pages() {
        return pages;
    }

    /** {@return the address of the view's first byte} */
    public long address() {
        return base;
    }

    /** {@return a view of {@code [offset, offset + length)} that lives as long as {@code arena}} */
    public MemorySegment view(long offset, long length, Arena arena) {
        return Mman.view(pages, offset, length, arena);
    }

    /**
     * {@return the segment of a lease or pin over {@code [offset, offset + length)}, living as
     * long as {@code arena}} A view of this mapping; on a hugetlb file, a slice of a mapping
     * of its own of the huge pages under it, unmapped when {@code arena} closes.
     *
     * @throws LinuxException {@code ENOMEM} and the like when the kernel cannot map it
     */
    public MemorySegment reference(long offset, long length, Arena arena) {
        if (huge == 0) {
            return view(offset, length, arena);
        }
        long start = offset / huge * huge;
        long end = (offset + length + huge - 1) / huge * huge;
        Reference r = new Reference(start, end - start, offset, length);
        synchronized (referenceLock) {
            MemorySegment whole = Mman.mmap(arena, r.length, RW, Mman.MAP_SHARED | Mman.MAP_NORESERVE, fd, start,
                    address -> unmapReference(r));
            r.address = whole.address();
            references.add(r);
            return whole.asSlice(offset - start, length);
        }
    }

    /**
     * Unmaps a reference whose arena closed. Its resident huge pages are mapped into this view
     * first: the kernel counts a hugetlb page resident only where it is mapped, and a page
     * that host code allocated through the reference alone would else look like a hole.
     */
    private void unmapReference(Reference r) {
        synchronized (referenceLock) {
            references.remove(r);
            if (!retired && punchLock != null) {
                synchronized (punchLock) {
                    keepResident(r);
                }
            }
            Mman.munmap(r.address, r.length);
        }
    }

    private void keepResident(Reference r) {
        try (Arena scratch = Arena.ofConfined()) {
            MemorySegment vec = scratch.allocate(r.length / Mman.PAGE_SIZE);
            Mman.mincore(reach(r.address, r.length), vec);
            long perHuge = huge / Mman.PAGE_SIZE;
            for (long h = 0; h < r.length / huge; h++) {
                if (!r.replaced.get((int) h) && (vec.get(java.lang.foreign.ValueLayout.JAVA_BYTE, h * perHuge) & 1) != 0) {
                    Mman.madvise(pages.asSlice(r.fileOffset + h * huge, huge), Mman.MADV_POPULATE_WRITE);
                }
            }
        } catch (LinuxException e) {
            // Residency is a report: a page not kept shows as a hole until it is touched again.
        }
    }

    /** Sets the residency bit of the pages of {@code [offset, offset + length)} mapped here or in a live reference. */
    private void addResident(long offset, long length, MemorySegment residency) {
        try (Arena scratch = Arena.ofConfined()) {
            long count = length / Mman.PAGE_SIZE;
            MemorySegment vec = scratch.allocate(count);
            synchronized (referenceLock) {
                if (retired) {
                    return;
                }
                Mman.mincore(pages.asSlice(offset, length), vec);
                or(residency, vec, 0, count);
                for (Reference r : references) {
                    long from = Math.max(offset, r.fileOffset);
                    long to = Math.min(offset + length, r.fileOffset + r.length);
                    if (from < to && r.replaced.isEmpty()) {
                        Mman.mincore(reach(r.address + (from - r.fileOffset), to - from), vec);
                        or(residency, vec, (from - offset) / Mman.PAGE_SIZE, (to - from) / Mman.PAGE_SIZE);
                    }
                }
            }
        }
    }

    private static void or(MemorySegment into, MemorySegment vec, long at, long count) {
        for (long i = 0; i < count; i++) {
            byte b = vec.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i);
            if ((b & 1) != 0) {
                into.set(java.lang.foreign.ValueLayout.JAVA_BYTE, at + i, (byte) 1);
            }
        }
    }

    /** {@return a segment over addresses this view owns, for the kernel's calls only} */
    private static MemorySegment reach(long address, long length) {
        return Mman.reach(address, length);
    }

    /**
     * Maps the allocated huge pages under {@code [offset, offset + length)} into this view, so
     * that host code's first touch of them takes no fault; nothing on 4 KiB files.
     */
    public void mapAllocated(long offset, long length) {
        if (huge == 0 || retired) {
            return;
        }
        long start = offset / huge * huge;
        long end = Math.min(size, (offset + length + huge - 1) / huge * huge);
        try {
            Mman.madvise(pages.asSlice(start, end - start), Mman.MADV_POPULATE_WRITE);
        } catch (LinuxException e) {
            // Only an optimisation: the first touch faults the page in instead.
        }
    }

    /** {@return the alignment of what revoke and restore change: the huge page, or the page} */
    public long granule() {
        return huge == 0 ? Mman.PAGE_SIZE : huge;
    }

    /** Records that a lease or pin over {@code [offset, offset + length)} was handed out. */
    public void expose(long offset, long length) {
        exposed.set(page(offset), pageUp(offset + length), true);
    }

    /**
     * Replaces the file's pages in {@code [offset, offset + length)} (page aligned) with
     * anonymous ones, if anything handed out may still reach them.
     *
     * @return true when the page tables changed
     * @throws LinuxException {@code ENOMEM} and the like: nothing changed
     */
    public synchronized boolean revoke(long offset, long length) {
        if (retired) {
            return false;  // all anonymous already, and perhaps unmapped: MAP_FIXED there could hit another mapping
        }
        if (huge != 0) {
            return revokeReferences(offset, length);
        }
        long first = page(offset);
        long end = pageUp(offset + length);
        if (exposed.firstSet(first, end) < 0 && !heldOver(offset, length)) {
            return false;
        }
        Mman.mmapFixed(base + offset, length, RW, ANONYMOUS, -1, 0);
        replaced.set(first, end, true);
        exposed.set(first, end, false);
        return true;
    }

    /**
     * Replaces, in every reference whose segment the range touches, the huge pages of that
     * segment that the range touches. A reference elsewhere in the same huge page keeps it: it
     * reaches the private bytes no more than a view of this mapping would, only by leaving
     * its segment.
     */
    private boolean revokeReferences(long offset, long length) {
        boolean changed = false;
        synchronized (referenceLock) {
            for (Reference r : references) {
                long from = Math.max(offset, r.segmentOffset);
                long to = Math.min(offset + length, r.segmentOffset + r.segmentLength);
                if (from >= to) {
                    continue;  // the segment does not reach the range
                }
                for (long h = from / huge * huge; h < to; h += huge) {
                    int index = (int) ((h - r.fileOffset) / huge);
                    if (!r.replaced.get(index)) {
                        Mman.mmapFixed(r.address + (h - r.fileOffset), huge, RW, ANONYMOUS, -1, 0);
                        r.replaced.set(index);
                        changed = true;
                    }
                }
            }
        }
        return changed;
    }

    /** Maps the file back over the replaced huge pages of references that lie wholly inside the range. */
    private long restoreReferences(long offset, long length) {
        long failed = -1;
        synchronized (referenceLock) {
            for (Reference r : references) {
                for (int index = r.replaced.nextSetBit(0); index >= 0; index = r.replaced.nextSetBit(index + 1)) {
                    long h = r.fileOffset + index * huge;
                    if (h >= offset && h + huge <= offset + length) {
                        try {
                            Mman.mmapFixed(r.address + index * huge, huge, RW, Mman.MAP_SHARED | Mman.MAP_NORESERVE, fd, h);
                            r.replaced.clear(index);
                        } catch (LinuxException e) {
                            failed = failed < 0 ? h : Math.min(failed, h);
                        }
                    }
                }
            }
        }
        return failed;
    }

    /**
     * Maps the file back over every replaced page of {@code [offset, offset + length)}. On a
     * hugetlb file the caller passes shared pages only, and a huge page comes back only when
     * it lies wholly inside the range.
     *
     * @return -1, or the first page offset left replaced because the kernel refused
     */
    public synchronized long restore(long offset, long length) {
        if (retired) {
            return -1;
        }
        if (huge != 0) {
            return restoreReferences(offset, length);
        }
        long[] failed = {-1};
        replaced.forEachRun(page(offset), pageUp(offset + length), true, (from, to) -> {
            long at = from * Mman.PAGE_SIZE;
            long bytes = (to - from) * Mman.PAGE_SIZE;
            try {
                Mman.mmapFixed(base + at, bytes, RW, Mman.MAP_SHARED | Mman.MAP_NORESERVE, fd, at);
                replaced.set(from, to, false);
                if (heldOver(at, bytes)) {
                    exposed.set(from, to, true);
                }
            } catch (LinuxException e) {
                if (failed[0] < 0) {
                    failed[0] = at;
                }
            }
        });
        return failed[0];
    }

    /** {@return true when a page of {@code [offset, offset + length)} is replaced} */
    public boolean isReplaced(long offset, long length) {
        if (huge != 0) {
            synchronized (referenceLock) {
                for (Reference r : references) {
                    long from = Math.max(offset, r.fileOffset);
                    long to = Math.min(offset + length, r.fileOffset + r.length);
                    if (from < to && r.replaced.nextSetBit((int) ((from - r.fileOffset) / huge)) >= 0
                            && r.replaced.nextSetBit((int) ((from - r.fileOffset) / huge)) <= (to - 1 - r.fileOffset) / huge) {
                        return true;
                    }
                }
            }
            return false;
        }
        return replaced.firstSet(page(offset), pageUp(offset + length)) >= 0;
    }

    /**
     * Keeps a reference whose arena a native call holds: its range counts as exposed until
     * the arena closes, which the {@link Reaper} tries until it succeeds.
     */
    public void hold(Arena arena, long offset, long length) {
        Held h = new Held(arena, offset, length);
        synchronized (held) {
            held.add(h);
        }
        Reaper.schedule(() -> {
            try {
                h.arena().close();
            } catch (IllegalStateException stillInNativeCall) {
                return false;
            }
            synchronized (held) {
                held.remove(h);
            }
            return true;
        });
    }

    /** {@return the number of held references not yet closed} */
    public int heldCount() {
        synchronized (held) {
            return held.size();
        }
    }

    /** Calls {@code range} with the file range of each held reference. */
    public void forEachHeld(BackingFile.RunConsumer range) {
        List<Held> copy;
        synchronized (held) {
            copy = List.copyOf(held);
        }
        for (Held h : copy) {
            range.accept(h.offset(), h.length());
        }
    }

    private boolean heldOver(long offset, long length) {
        synchronized (held) {
            for (Held h : held) {
                if (h.offset() < offset + length && offset < h.offset() + h.length()) {
                    return true;
                }
            }
        }
        return false;
    }

    /**
     * Ends the view: every page becomes anonymous at once (no held reference reaches the file
     * from here on), and the addresses are unmapped as soon as no held reference remains and
     * {@code gate} has no access in flight. Never throws.
     */
    public synchronized void retire(RangeGate gate) {
        if (retired) {
            return;
        }
        synchronized (referenceLock) {
            retired = true;
            for (Reference r : references) {
                try {
                    Mman.mmapFixed(r.address, r.length, RW, ANONYMOUS, -1, 0);
                    r.replaced.set(0, (int) (r.length / huge));
                } catch (LinuxException e) {
                    // Kept mapped until its arena closes.
                }
            }
        }
        try {
            Mman.mmapFixed(base, size, RW, ANONYMOUS, -1, 0);
        } catch (LinuxException e) {
            // Kept mapped: the file's pages stay reachable only until the unmap below.
        }
        if (!tryUnmap(gate)) {
            Reaper.schedule(() -> tryUnmap(gate));
        }
    }

    /** {@return true once unmapped} */
    public synchronized boolean isUnmapped() {
        return unmapped;
    }

    private synchronized boolean tryUnmap(RangeGate gate) {
        if (unmapped) {
            return true;
        }
        if (heldCount() > 0 || !gate.isQuiet()) {
            return false;
        }
        Mman.munmap(base, size);
        unmapped = true;
        return true;
    }

    private static long page(long offset) {
        return offset / Mman.PAGE_SIZE;
    }

    private static long pageUp(long offset) {
        return (offset + Mman.PAGE_SIZE - 1) / Mman.PAGE_SIZE;
    }
}
