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
 * @implSpec Revoke, restore, expose and retire under the file's lock; held references and the
 * final unmapping are thread safe.
 */
public final class HostView {
    private static final int ANONYMOUS = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_NORESERVE;
    private static final int RW = Mman.PROT_READ | Mman.PROT_WRITE;

    /** A reference whose arena could not be closed because a native call held it. */
    private record Held(Arena arena, long offset, long length) {
    }

    private final int fd;
    private final long size;
    private final long base;
    private final MemorySegment pages;
    /** Pages whose lease or pin was handed out since they were last revoked: a raw address may reach them. */
    private final PageBits exposed;
    /** Pages now backed by anonymous pages instead of the file. */
    private final PageBits replaced;
    private final List<Held> held = new ArrayList<>();  // guarded by itself
    private boolean retired;  // guarded by this
    private boolean unmapped;  // guarded by this

    /** Maps all of {@code fd} ({@code size} bytes) for the host. */
    public HostView(int fd, long size) {
        this.fd = fd;
        this.size = size;
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
     * Maps the file back over every replaced page of {@code [offset, offset + length)}.
     *
     * @return -1, or the first page offset left replaced because the kernel refused
     */
    public synchronized long restore(long offset, long length) {
        if (retired) {
            return -1;
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
        retired = true;
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
