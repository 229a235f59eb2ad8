package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.StructLayout;

/**
 * The part of the KVM user-space API ({@code include/uapi/linux/kvm.h}) that memory
 * management needs: the system and VM ioctls, guest_memfd creation, memslots and memory
 * attributes. Request numbers are derived from the structs' layouts.
 */
public final class KvmUapi {
    /** The ioctl type of every KVM request. */
    public static final int KVMIO = 0xAE;

    public static final long KVM_GET_API_VERSION = Ioctl.io(KVMIO, 0x00);
    public static final long KVM_CREATE_VM = Ioctl.io(KVMIO, 0x01);
    public static final long KVM_CHECK_EXTENSION = Ioctl.io(KVMIO, 0x03);
    public static final long KVM_GET_VCPU_MMAP_SIZE = Ioctl.io(KVMIO, 0x04);
    public static final long KVM_CREATE_VCPU = Ioctl.io(KVMIO, 0x41);
    public static final long KVM_SET_TSS_ADDR = Ioctl.io(KVMIO, 0x47);
    public static final long KVM_RUN = Ioctl.io(KVMIO, 0x80);

    /** {@code KVM_CREATE_GUEST_MEMFD}: {@code _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)}. */
    public static final long KVM_CREATE_GUEST_MEMFD = Ioctl.iowr(KVMIO, 0xd4, GuestMemfdCreate.LAYOUT);
    /** {@code KVM_SET_USER_MEMORY_REGION2}: {@code _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)}. */
    public static final long KVM_SET_USER_MEMORY_REGION2 = Ioctl.iow(KVMIO, 0x49, UserspaceMemoryRegion2.LAYOUT);
    /** {@code KVM_SET_MEMORY_ATTRIBUTES}: {@code _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)}. */
    public static final long KVM_SET_MEMORY_ATTRIBUTES = Ioctl.iow(KVMIO, 0xd2, MemoryAttributes.LAYOUT);
    /**
     * {@code KVM_SET_MEMORY_ATTRIBUTES2}: {@code _IOWR(KVMIO, 0xd2, struct kvm_memory_attributes2)},
     * a guest_memfd ioctl of the in-place conversion series (queued for the merge window after
     * 6.19; not in this project's 6.18 kernels, which answer ENOTTY on a guest_memfd).
     */
    public static final long KVM_SET_MEMORY_ATTRIBUTES2 = Ioctl.iowr(KVMIO, 0xd2, MemoryAttributes2.LAYOUT);

    public static final int KVM_CAP_USER_MEMORY2 = 231;
    public static final int KVM_CAP_MEMORY_ATTRIBUTES = 233;
    public static final int KVM_CAP_GUEST_MEMFD = 234;
    public static final int KVM_CAP_VM_TYPES = 235;
    public static final int KVM_CAP_GUEST_MEMFD_FLAGS = 244;
    public static final int KVM_CAP_EXIT_HYPERCALL = 201;
    /**
     * {@code KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES}: the attributes {@link #KVM_SET_MEMORY_ATTRIBUTES2}
     * can set on a guest_memfd of the VM asked, 0 where the kernel lacks it. The number moved
     * with every revision of the series as other capabilities merged first (246, 248, 249);
     * 250 is the last revision's (v8, June 2026), after {@code KVM_CAP_S390_HPAGE_2G} (249).
     */
    public static final int KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES = 250;

    /** {@link #KVM_SET_MEMORY_ATTRIBUTES2} content mode: no promise about the bytes. */
    public static final long KVM_SET_MEMORY_ATTRIBUTES2_MODE_UNSPECIFIED = 0;
    /** {@link #KVM_SET_MEMORY_ATTRIBUTES2} content mode: every entity allowed to read reads zeros (towards shared only). */
    public static final long KVM_SET_MEMORY_ATTRIBUTES2_ZERO = 1L << 0;
    /** {@link #KVM_SET_MEMORY_ATTRIBUTES2} content mode: the bytes as last written in the clear are kept. */
    public static final long KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE = 1L << 1;

    /** guest_memfd flag: the host may mmap the file. */
    public static final long GUEST_MEMFD_FLAG_MMAP = 1L << 0;
    /** guest_memfd flag: pages start shared. */
    public static final long GUEST_MEMFD_FLAG_INIT_SHARED = 1L << 1;

    /** Memslot flag: dirty page logging. */
    public static final int KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
    /** Memslot flag: read-only for the guest. */
    public static final int KVM_MEM_READONLY = 1 << 1;
    /** Memslot flag: private memory comes from the guest_memfd named in the slot. */
    public static final int KVM_MEM_GUEST_MEMFD = 1 << 2;

    /** Memory attribute: private to the guest. */
    public static final long KVM_MEMORY_ATTRIBUTE_PRIVATE = 1L << 3;

    private KvmUapi() {
    }

    /**
     * {@code struct kvm_create_guest_memfd}.
     *
     * @param size  file size in bytes
     * @param flags {@code GUEST_MEMFD_FLAG_*}
     */
    public record GuestMemfdCreate(long size, long flags) {
        public static final StructLayout LAYOUT = MemoryLayout.structLayout(
                JAVA_LONG.withName("size"),
                JAVA_LONG.withName("flags"),
                MemoryLayout.sequenceLayout(6, JAVA_LONG).withName("reserved"));

        /** {@return the struct in memory from {@code allocator}, reserved fields zero} */
        public MemorySegment toSegment(SegmentAllocator allocator) {
            MemorySegment s = allocator.allocate(LAYOUT);
            s.fill((byte) 0);
            s.set(JAVA_LONG, 0, size);
            s.set(JAVA_LONG, 8, flags);
            return s;
        }
    }

    /**
     * {@code struct kvm_userspace_memory_region2}: a memslot.
     *
     * @param slot             slot id (address space in bits 16-31)
     * @param flags            {@code KVM_MEM_*}
     * @param guestPhysAddr    guest-physical base
     * @param memorySize       bytes; 0 deletes the slot
     * @param userspaceAddr    host virtual address of the shared memory
     * @param guestMemfdOffset offset in the guest_memfd
     * @param guestMemfd       guest_memfd file descriptor (with {@link #KVM_MEM_GUEST_MEMFD})
     */
    public record UserspaceMemoryRegion2(int slot, int flags, long guestPhysAddr, long memorySize,
                                         long userspaceAddr, long guestMemfdOffset, int guestMemfd) {
        public static final StructLayout LAYOUT = MemoryLayout.structLayout(
                JAVA_INT.withName("slot"),
                JAVA_INT.withName("flags"),
                JAVA_LONG.withName("guest_phys_addr"),
                JAVA_LONG.withName("memory_size"),
                JAVA_LONG.withName("userspace_addr"),
                JAVA_LONG.withName("guest_memfd_offset"),
                JAVA_INT.withName("guest_memfd"),
                JAVA_INT.withName("pad1"),
                MemoryLayout.sequenceLayout(14, JAVA_LONG).withName("pad2"));

        /** {@return the struct in memory from {@code allocator}, padding zero} */
        public MemorySegment toSegment(SegmentAllocator allocator) {
            MemorySegment s = allocator.allocate(LAYOUT);
            s.fill((byte) 0);
            s.set(JAVA_INT, 0, slot);
            s.set(JAVA_INT, 4, flags);
            s.set(JAVA_LONG, 8, guestPhysAddr);
            s.set(JAVA_LONG, 16, memorySize);
            s.set(JAVA_LONG, 24, userspaceAddr);
            s.set(JAVA_LONG, 32, guestMemfdOffset);
            s.set(JAVA_INT, 40, guestMemfd);
            return s;
        }
    }

    /**
     * {@code struct kvm_memory_attributes}.
     *
     * @param address    guest-physical start
     * @param size       bytes
     * @param attributes {@link #KVM_MEMORY_ATTRIBUTE_PRIVATE} or 0
     * @param flags      must be 0
     */
    public record MemoryAttributes(long address, long size, long attributes, long flags) {
        public static final StructLayout LAYOUT = MemoryLayout.structLayout(
                JAVA_LONG.withName("address"),
                JAVA_LONG.withName("size"),
                JAVA_LONG.withName("attributes"),
                JAVA_LONG.withName("flags"));

        /** {@return the struct in memory from {@code allocator}} */
        public MemorySegment toSegment(SegmentAllocator allocator) {
            MemorySegment s = allocator.allocate(LAYOUT);
            s.set(JAVA_LONG, 0, address);
            s.set(JAVA_LONG, 8, size);
            s.set(JAVA_LONG, 16, attributes);
            s.set(JAVA_LONG, 24, flags);
            return s;
        }
    }

    /**
     * {@code struct kvm_memory_attributes2}: the argument of {@link #KVM_SET_MEMORY_ATTRIBUTES2},
     * in and out. On a guest_memfd the first field is a file offset; on EAGAIN (a page with
     * unexpected references) and on a refused content mode the kernel writes the offset of
     * the page at fault to {@code error_offset}, which must be 0 going in.
     *
     * @param offset     file offset of the range
     * @param size       bytes
     * @param attributes {@link #KVM_MEMORY_ATTRIBUTE_PRIVATE} or 0
     * @param flags      a content mode: {@link #KVM_SET_MEMORY_ATTRIBUTES2_ZERO},
     *                   {@link #KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE}, or 0
     */
    public record MemoryAttributes2(long offset, long size, long attributes, long flags) {
        public static final StructLayout LAYOUT = MemoryLayout.structLayout(
                JAVA_LONG.withName("offset"),
                JAVA_LONG.withName("size"),
                JAVA_LONG.withName("attributes"),
                JAVA_LONG.withName("flags"),
                JAVA_LONG.withName("error_offset"),
                MemoryLayout.sequenceLayout(11, JAVA_LONG).withName("reserved"));
        private static final long ERROR_OFFSET = LAYOUT.byteOffset(MemoryLayout.PathElement.groupElement("error_offset"));

        /** {@return the struct in memory from {@code allocator}, error offset and reserved fields zero} */
        public MemorySegment toSegment(SegmentAllocator allocator) {
            MemorySegment s = allocator.allocate(LAYOUT);
            s.fill((byte) 0);
            s.set(JAVA_LONG, 0, offset);
            s.set(JAVA_LONG, 8, size);
            s.set(JAVA_LONG, 16, attributes);
            s.set(JAVA_LONG, 24, flags);
            return s;
        }

        /** {@return the {@code error_offset} the kernel wrote into {@code s}} */
        public static long errorOffset(MemorySegment s) {
            return s.get(JAVA_LONG, ERROR_OFFSET);
        }
    }
}
