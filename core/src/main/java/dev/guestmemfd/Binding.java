package dev.guestmemfd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Objects;

/**
 * A range of a guest memory file bound into an owner's address space (a memslot, a parcel):
 * the owner receives every invalidation and preparation of the range, and through the
 * binding reaches every page of it, private ones included, as a hypervisor does to load and
 * emulate its guest.
 *
 * <p>A closed binding refuses everything: its methods fail with {@code EBADF}, its
 * {@link #pages()} segment is no longer alive, and its owner receives no further call.
 *
 * @implSpec Thread safe. The {@link #pages()} segment lives as long as the binding.
 */
public final class Binding implements AutoCloseable {
    private final GuestMemory memory;
    private final Owner owner;
    private final long offset;
    private final long length;
    private final Arena arena;
    private final MemorySegment pages;
    /** Written under the file's lock, by {@link #end()}. */
    private volatile boolean closed;

    Binding(GuestMemory memory, Owner owner, long offset, long length, Arena arena, MemorySegment pages) {
        this.memory = memory;
        this.owner = owner;
        this.offset = offset;
        this.length = length;
        this.arena = arena;
        this.pages = pages;
    }

    /** {@return the file} */
    public GuestMemory memory() {
        return memory;
    }

    /** {@return the owner} */
    public Owner owner() {
        return owner;
    }

    /** {@return the file offset of the bound range} */
    public long offset() {
        return offset;
    }

    /** {@return the bound length in bytes} */
    public long length() {
        return length;
    }

    /**
     * {@return the bound pages, shared and private, for the owner alone} Its address is what a
     * memslot's {@code userspace_addr} names. Touching it once the binding or the file is
     * closed throws {@link IllegalStateException}.
     */
    public MemorySegment pages() {
        return pages;
    }

    /**
     * Copies {@code source} into private pages at file offset {@code at} (zero-filling the
     * rest of the last page) and measures them into {@code digest}, like the kernel's
     * {@code kvm_gmem_populate}.
     *
     * @param source the bytes, not null; not overlapping the binding's pages
     * @param digest the launch measurement, or null
     * @throws GuestMemoryException {@code EBADF} when the binding or the file is closed;
     *                              {@code EINVAL} when {@code at} is unaligned, the source is
     *                              empty, the pages leave the binding, or any of them is shared;
     *                              {@code EFAULT} when the source segment is closed;
     *                              {@code EHWPOISON} when a page is poisoned;
     *                              {@code EPERM} when the owner refuses (the pages are zero again)
     */
    public void populate(long at, MemorySegment source, LaunchDigest digest) {
        memory.recordedGrant("populate", at, source == null ? 0 : source.byteSize(), () -> {
            populateUnrecorded(at, source, digest);
            return null;
        });
    }

    private void populateUnrecorded(long at, MemorySegment source, LaunchDigest digest) {
        Objects.requireNonNull(source, "source");
        String op = "populate(offset=" + at + ", len=" + source.byteSize() + ")";
        ensureOpen(op);
        if (!source.scope().isAlive()) {
            throw new GuestMemoryException(Errno.EFAULT, op, "the source segment is no longer alive", -1);
        }
        long bytes = source.byteSize();
        // Overflow-safe: the length is bounded by the binding's before it is rounded up.
        if (at % GuestMemory.PAGE_SIZE != 0 || bytes == 0 || bytes > length || at < offset || at - offset > length - bytes) {
            throw new GuestMemoryException(Errno.EINVAL, op, "pages must be aligned and inside the binding", -1);
        }
        long rounded = (bytes + GuestMemory.PAGE_SIZE - 1) / GuestMemory.PAGE_SIZE * GuestMemory.PAGE_SIZE;
        if (at - offset > length - rounded) {
            throw new GuestMemoryException(Errno.EINVAL, op, "pages must be aligned and inside the binding", -1);
        }
        memory.fetchFirst(op, at, rounded);  // it writes through the owner's view: the pages must be in
        memory.locked(op, () -> {
            ensureOpen(op);
            memory.checkNotPoisoned(op, at, rounded);
            if (!memory.allPrivate(at, rounded)) {
                throw new GuestMemoryException(Errno.EINVAL, op, "populate writes private pages only; convert first", -1);
            }
            MemorySegment target = pages.asSlice(at - offset, rounded);
            target.copyFrom(source);
            target.asSlice(source.byteSize()).fill((byte) 0);
            memory.changed(at, rounded);
            try {
                owner.populate(this, at, rounded);
            } catch (OwnerRefusal refusal) {
                target.fill((byte) 0);
                throw new GuestMemoryException(Errno.EPERM, op, "owner refused page at offset " + refusal.offset()
                        + ": " + refusal.getMessage(), refusal.offset());
            } catch (RuntimeException | Error e) {
                target.fill((byte) 0);  // the owner failed: nothing of the source stays behind
                throw e;
            }
            if (digest != null) {
                for (long p = 0; p < rounded; p += GuestMemory.PAGE_SIZE) {
                    digest.page(at + p, target.asSlice(p, GuestMemory.PAGE_SIZE));
                }
            }
        });
    }

    void invalidateBegin(long from, long bytes, Invalidation why) {
        if (closed) {
            return;
        }
        long start = Math.max(from, offset);
        owner.invalidateBegin(this, start, Math.min(from + bytes, offset + length) - start, why);
    }

    void invalidateEnd(long from, long bytes, Invalidation why) {
        if (closed) {
            return;  // unbound from a callback: the owner was released and hears no more
        }
        long start = Math.max(from, offset);
        owner.invalidateEnd(this, start, Math.min(from + bytes, offset + length) - start, why);
    }

    /** {@return whether the owner can give {@code content} to a conversion of its part of the range to {@code target}} */
    boolean supportsContent(Attribute target, Content content) {
        return closed || owner.supportsContent(this, target, content);
    }

    void prepare(long from, long bytes, boolean toPrivate, Content content) throws OwnerRefusal {
        if (closed) {
            return;
        }
        long start = Math.max(from, offset);
        long len = Math.min(from + bytes, offset + length) - start;
        if (toPrivate) {
            owner.prepareInaccessible(this, start, len, content);
        } else {
            owner.prepareAccessible(this, start, len, content);
        }
    }

    /** Undoes a successful {@link #prepare}. */
    void rollback(long from, long bytes, boolean toPrivate) {
        if (closed) {
            return;
        }
        long start = Math.max(from, offset);
        owner.rollback(this, start, Math.min(from + bytes, offset + length) - start,
                toPrivate ? Attribute.SHARED : Attribute.PRIVATE);
    }

    /**
     * {@return the number of live host references (leases and pins) over any page of the
     * range} An architecture that must not give the guest a page the host still maps (pKVM's
     * host stage-2, SNP's RMP) can check it; the library revokes leases and waits for pins
     * before {@link Owner#prepareInaccessible}, so an owner sees 0 there.
     *
     * @param at    a file offset inside the binding
     * @param bytes a positive length that keeps the range inside the binding
     * @throws GuestMemoryException {@code EINVAL} for a range that is empty or leaves the
     *                              binding; {@code EBADF} when the binding or the file is closed
     */
    public int hostReferences(long at, long bytes) {
        String op = "hostReferences(offset=" + at + ", len=" + bytes + ")";
        ensureOpen(op);
        if (bytes <= 0 || at < offset || at - offset > length - bytes) {
            throw new GuestMemoryException(Errno.EINVAL, op, "the range must be non-empty and inside the binding", -1);
        }
        return memory.hostReferences(at, bytes);
    }

    /** {@return true once unbound, or the file closed} */
    public boolean isClosed() {
        return closed;
    }

    private void ensureOpen(String op) {
        if (closed) {
            throw new GuestMemoryException(Errno.EBADF, op, "the binding is closed", -1);
        }
    }

    /** Ends the binding, under the file's lock: no more calls to the owner, no more access through its pages. */
    void end() {
        closed = true;
        try {
            arena.close();
        } catch (IllegalStateException heldByNativeCall) {
            // The segment stays valid until the call lets go: the file keeps the owner's view
            // mapped (never reused) until then, and closes the arena as soon as it can.
            memory.keepOwnerView(arena);
        }
    }

    /** Unbinds: the owner is released and stops receiving calls. Idempotent. */
    @Override
    public void close() {
        memory.unbind(this);
    }
}
