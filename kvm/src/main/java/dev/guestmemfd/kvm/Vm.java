package dev.guestmemfd.kvm;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Invalidation;
import dev.guestmemfd.Content;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.Owner;
import dev.guestmemfd.OwnerRefusal;
import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.Ioctl;
import dev.guestmemfd.linux.KvmUapi;
import dev.guestmemfd.linux.KvmVcpuUapi;
import dev.guestmemfd.linux.LinuxException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A KVM virtual machine, and the owner of the guest memory bound into it.
 *
 * <p>As an {@link Owner} the VM keeps the kernel's view in step with the library's: where
 * the kernel has private memory ({@code KVM_CAP_MEMORY_ATTRIBUTES}), a conversion sets the
 * pages' attribute with {@code KVM_SET_MEMORY_ATTRIBUTES}; where it does not (this project's
 * test host), the library alone enforces the host side, and the guest can reach every page.
 * A punch needs nothing from the owner: the kernel drops the guest's mappings of a punched
 * page itself (the memfd's MMU notifier, or guest_memfd's own invalidation).
 *
 * @implSpec Thread safe.
 */
public final class Vm implements AutoCloseable {
    /** A TSS address above guest RAM, as every VMM on Intel sets one. */
    public static final long TSS_ADDRESS = 0xfffbd000L;

    private final Kvm kvm;
    private final int fd;
    private final boolean kernelPrivateMemory;
    private final List<Memslot> memslots = new CopyOnWriteArrayList<>();
    private final List<Vcpu> vcpus = new CopyOnWriteArrayList<>();
    private final Owner owner = new KvmOwner();
    private final AtomicLong invalidations = new AtomicLong();
    private volatile boolean closed;

    Vm(Kvm kvm, int fd) {
        this.kvm = kvm;
        this.fd = fd;
        this.kernelPrivateMemory = checkExtension(KvmUapi.KVM_CAP_MEMORY_ATTRIBUTES) != 0
                && (checkExtension(KvmUapi.KVM_CAP_MEMORY_ATTRIBUTES) & KvmUapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) != 0;
    }

    /** {@return the VM's file descriptor} */
    public int fd() {
        return fd;
    }

    /** {@return true when the kernel keeps pages private for this VM (memory attributes)} */
    public boolean kernelPrivateMemory() {
        return kernelPrivateMemory;
    }

    /** {@return how many invalidations the VM has received as an owner} */
    public long invalidations() {
        return invalidations.get();
    }

    /** {@return {@code KVM_CHECK_EXTENSION} on this VM} */
    public int checkExtension(int capability) {
        return ioctl("KVM_CHECK_EXTENSION(" + capability + ")", KvmUapi.KVM_CHECK_EXTENSION, capability);
    }

    /** Sets the TSS address that Intel's VMX needs, above guest RAM. */
    public void setTssAddress(long address) {
        ioctl("KVM_SET_TSS_ADDR", KvmUapi.KVM_SET_TSS_ADDR, address);
    }

    /** Enables a capability with one argument ({@code KVM_ENABLE_CAP}). */
    public void enableCapability(int capability, long arg0) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(KvmVcpuUapi.ENABLE_CAP);
            s.fill((byte) 0);
            s.set(JAVA_INT, 0, capability);
            s.set(JAVA_LONG, 8, arg0);
            ioctl("KVM_ENABLE_CAP(" + capability + ")", KvmVcpuUapi.KVM_ENABLE_CAP, s);
        }
    }

    /**
     * Creates a guest memory file on this VM's kernel guest_memfd: KVM binds a guest_memfd
     * only into the VM it was created on.
     *
     * @see GuestMemory#createOnVm(long, long, int)
     */
    public GuestMemory createGuestMemory(long size, long flags) {
        return GuestMemory.createOnVm(size, flags, fd);
    }

    /**
     * Binds {@code [fileOffset, fileOffset + length)} of {@code memory} into this VM at
     * guest-physical {@code guestPhysical} as memslot {@code slot}: through
     * {@code KVM_MEM_GUEST_MEMFD} when the memory is the kernel's guest_memfd, else through
     * the library's mapping of the file as an ordinary memslot.
     *
     * @param logDirty ask the kernel to log dirty pages (refused on guest_memfd slots)
     * @throws GuestMemoryException {@code EINVAL} when the file range is unaligned, outside the
     *                              file or already bound
     * @throws KvmException         with the kernel's errno: {@code EEXIST} for guest-physical
     *                              ranges that overlap another slot, {@code EINVAL} for
     *                              unaligned addresses, dirty logging on guest_memfd, a file of
     *                              another VM; nothing is bound then
     */
    public Memslot bind(GuestMemory memory, int slot, long guestPhysical, long fileOffset, long length, boolean logDirty) {
        ensureOpen();
        Binding binding = memory.bind(owner, fileOffset, length);
        boolean guestMemfd = memory.backing() == Backing.KERNEL;
        int flags = (guestMemfd ? KvmUapi.KVM_MEM_GUEST_MEMFD : 0) | (logDirty ? KvmUapi.KVM_MEM_LOG_DIRTY_PAGES : 0);
        try {
            setRegion(new KvmUapi.UserspaceMemoryRegion2(slot, flags, guestPhysical, length,
                    binding.pages().address(), guestMemfd ? fileOffset : 0, guestMemfd ? memory.fd() : 0));
        } catch (KvmException e) {
            binding.close();
            throw e;
        }
        Memslot memslot = new Memslot(slot, guestPhysical, binding, guestMemfd);
        memslots.add(memslot);
        return memslot;
    }

    /**
     * Turns dirty logging of a slot on or off ({@code KVM_MEM_LOG_DIRTY_PAGES}), as a
     * migration does when pre-copy begins and ends: the slot is set again with only that flag
     * changed. From then on {@link #dirtyLog} returns the pages the guest wrote.
     *
     * @throws KvmException {@code EINVAL} on a guest_memfd slot: the kernel logs no dirty
     *                      pages for memory it does not map into user space
     */
    public void logDirty(Memslot memslot, boolean on) {
        ensureOpen();
        Binding binding = memslot.binding();
        int flags = (memslot.guestMemfd() ? KvmUapi.KVM_MEM_GUEST_MEMFD : 0) | (on ? KvmUapi.KVM_MEM_LOG_DIRTY_PAGES : 0);
        setRegion(new KvmUapi.UserspaceMemoryRegion2(memslot.slot(), flags, memslot.guestPhysical(), memslot.size(),
                binding.pages().address(), memslot.guestMemfd() ? binding.offset() : 0,
                memslot.guestMemfd() ? binding.memory().fd() : 0));
    }

    /** {@return the memslots bound now} */
    public List<Memslot> memslots() {
        return List.copyOf(memslots);
    }

    /**
     * {@return the dirty-page bitmap of a slot since the last call ({@code KVM_GET_DIRTY_LOG}),
     * one bit per page} Only slots bound with dirty logging have one.
     */
    public long[] dirtyLog(Memslot memslot) {
        long pages = memslot.size() / GuestMemory.PAGE_SIZE;
        try (Arena a = Arena.ofConfined()) {
            MemorySegment bitmap = a.allocate(JAVA_LONG, (pages + 63) / 64);
            bitmap.fill((byte) 0);
            MemorySegment s = a.allocate(KvmVcpuUapi.DIRTY_LOG);
            s.set(JAVA_INT, 0, memslot.slot());
            s.set(JAVA_INT, 4, 0);
            s.set(JAVA_LONG, 8, bitmap.address());
            ioctl("KVM_GET_DIRTY_LOG(slot " + memslot.slot() + ")", KvmVcpuUapi.KVM_GET_DIRTY_LOG, s);
            return bitmap.toArray(JAVA_LONG);
        }
    }

    /**
     * Sets the memory attributes of a guest-physical range ({@code KVM_SET_MEMORY_ATTRIBUTES}).
     *
     * @throws KvmException {@code ENOTTY}/{@code EINVAL} where the VM type keeps none
     */
    public void setMemoryAttributes(long guestPhysical, long size, long attributes) {
        try (Arena a = Arena.ofConfined()) {
            ioctl("KVM_SET_MEMORY_ATTRIBUTES", KvmUapi.KVM_SET_MEMORY_ATTRIBUTES,
                    new KvmUapi.MemoryAttributes(guestPhysical, size, attributes, 0).toSegment(a));
        }
    }

    /** Creates vCPU {@code id}. */
    public Vcpu createVcpu(int id) {
        ensureOpen();
        int vcpuFd = ioctl("KVM_CREATE_VCPU(" + id + ")", KvmUapi.KVM_CREATE_VCPU, id);
        Vcpu vcpu = new Vcpu(id, vcpuFd, kvm.vcpuMmapSize());
        vcpus.add(vcpu);
        return vcpu;
    }

    private void setRegion(KvmUapi.UserspaceMemoryRegion2 region) {
        try (Arena a = Arena.ofConfined()) {
            ioctl("KVM_SET_USER_MEMORY_REGION2(slot " + region.slot() + ", gpa 0x" + Long.toHexString(region.guestPhysAddr())
                    + ", size 0x" + Long.toHexString(region.memorySize()) + ")",
                    KvmUapi.KVM_SET_USER_MEMORY_REGION2, region.toSegment(a));
        }
    }

    private int ioctl(String what, long request, long argument) {
        try {
            return Ioctl.ioctl(fd, request, argument);
        } catch (LinuxException e) {
            throw new KvmException(what, e);
        }
    }

    private int ioctl(String what, long request, MemorySegment argument) {
        try {
            return Ioctl.ioctl(fd, request, argument);
        } catch (LinuxException e) {
            throw new KvmException(what, e);
        }
    }

    private void ensureOpen() {
        if (closed) {
            throw new KvmException("VM", dev.guestmemfd.Errno.EBADF, "the VM is closed");
        }
    }

    private Memslot memslotOf(Binding binding) {
        for (Memslot m : memslots) {
            if (m.binding() == binding) {
                return m;
            }
        }
        return null;
    }

    /**
     * Closes the VM: its vCPUs, its memslots (the files stay, and can still be used), its
     * descriptor. Idempotent.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        for (Vcpu v : vcpus) {
            v.kick();
        }
        for (Memslot m : new ArrayList<>(memslots)) {
            m.close();
        }
        closed = true;
        for (Vcpu v : vcpus) {
            v.close();
        }
        Fd.close(fd);
    }

    /** The VM as the owner of the file ranges bound into it. */
    private final class KvmOwner implements Owner {
        @Override
        public void invalidateBegin(Binding binding, long offset, long length, Invalidation why) {
            invalidations.incrementAndGet();
        }

        @Override
        public void prepareInaccessible(Binding binding, long offset, long length, Content content) throws OwnerRefusal {
            setAttributes(binding, offset, length, KvmUapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
        }

        @Override
        public void prepareAccessible(Binding binding, long offset, long length, Content content) throws OwnerRefusal {
            setAttributes(binding, offset, length, 0);
        }

        @Override
        public void rollback(Binding binding, long offset, long length, Attribute attribute) {
            try {
                setAttributes(binding, offset, length, attribute == Attribute.PRIVATE ? KvmUapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0);
            } catch (OwnerRefusal e) {
                // The kernel took the forward change a moment ago; the way back is the same call.
            }
        }

        private void setAttributes(Binding binding, long offset, long length, long attributes) throws OwnerRefusal {
            Memslot m = memslotOf(binding);
            if (!kernelPrivateMemory || m == null) {
                return;
            }
            try {
                setMemoryAttributes(m.guestPhysicalOf(offset), length, attributes);
            } catch (KvmException e) {
                throw new OwnerRefusal(offset, "KVM_SET_MEMORY_ATTRIBUTES: " + e.errno());
            }
        }

        /** The binding ends: delete its slot, so the guest can no longer reach the pages. */
        @Override
        public void release(Binding binding) {
            Memslot m = memslotOf(binding);
            if (m == null) {
                return;
            }
            memslots.remove(m);
            if (!closed) {
                setRegion(new KvmUapi.UserspaceMemoryRegion2(m.slot(), 0,
                        m.guestPhysical(), 0, 0, 0, 0));
            }
        }
    }
}
