package dev.guestmemfd;

import java.lang.foreign.MemorySegment;

/**
 * A range of a guest memory file bound into an owner's address space (a memslot, a parcel):
 * the owner receives every invalidation and preparation of the range, and through the
 * binding reaches every page of it, private ones included, as a hypervisor does to load and
 * emulate its guest.
 *
 * @implSpec Thread safe. The {@link #pages()} segment lives as long as the file.
 */
public final class Binding implements AutoCloseable {
    private final GuestMemory memory;
    private final Owner owner;
    private final long offset;
    private final long length;
    private final MemorySegment pages;

    Binding(GuestMemory memory, Owner owner, long offset, long length, MemorySegment pages) {
        this.memory = memory;
        this.owner = owner;
        this.offset = offset;
        this.length = length;
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
     * memslot's {@code userspace_addr} names. Touching it after the file is closed is an error.
     */
    public MemorySegment pages() {
        return pages;
    }

    /**
     * Copies {@code source} into private pages at file offset {@code at} (zero-filling the
     * rest of the last page) and measures them into {@code digest}, like the kernel's
     * {@code kvm_gmem_populate}.
     *
     * @param digest the launch measurement, or null
     * @throws GuestMemoryException {@code EINVAL} when {@code at} is unaligned, the pages leave
     *                              the binding, or any of them is shared; {@code EPERM} when the
     *                              owner refuses (the pages are zero again)
     */
    public void populate(long at, MemorySegment source, LaunchDigest digest) {
        long rounded = (source.byteSize() + GuestMemory.PAGE_SIZE - 1) / GuestMemory.PAGE_SIZE * GuestMemory.PAGE_SIZE;
        String op = "populate(offset=" + at + ", len=" + source.byteSize() + ")";
        if (at % GuestMemory.PAGE_SIZE != 0 || at < offset || rounded == 0 || at - offset > length - rounded) {
            throw new GuestMemoryException(Errno.EINVAL, op, "pages must be aligned and inside the binding", -1);
        }
        memory.locked(op, () -> {
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
            }
            if (digest != null) {
                for (long p = 0; p < rounded; p += GuestMemory.PAGE_SIZE) {
                    digest.page(at + p, target.asSlice(p, GuestMemory.PAGE_SIZE));
                }
            }
        });
    }

    void invalidateBegin(long from, long bytes, Invalidation why) {
        long start = Math.max(from, offset);
        owner.invalidateBegin(this, start, Math.min(from + bytes, offset + length) - start, why);
    }

    void invalidateEnd(long from, long bytes, Invalidation why) {
        long start = Math.max(from, offset);
        owner.invalidateEnd(this, start, Math.min(from + bytes, offset + length) - start, why);
    }

    void prepare(long from, long bytes, boolean toPrivate, Content content) throws OwnerRefusal {
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
        long start = Math.max(from, offset);
        owner.rollback(this, start, Math.min(from + bytes, offset + length) - start,
                toPrivate ? Attribute.SHARED : Attribute.PRIVATE);
    }

    /**
     * {@return the number of live host references (leases and pins) over any page of the
     * range} An architecture that must not give the guest a page the host still maps (pKVM's
     * host stage-2, SNP's RMP) can check it; the library revokes leases and waits for pins
     * before {@link Owner#prepareInaccessible}, so an owner sees 0 there.
     */
    public int hostReferences(long at, long bytes) {
        return memory.hostReferences(at, bytes);
    }

    /** Unbinds: the owner is released and stops receiving calls. Idempotent. */
    @Override
    public void close() {
        memory.unbind(this);
    }
}
