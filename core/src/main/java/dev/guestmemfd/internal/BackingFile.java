package dev.guestmemfd.internal;

import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.Ioctl;
import dev.guestmemfd.linux.KvmDevice;
import dev.guestmemfd.linux.KvmUapi;
import dev.guestmemfd.linux.LinuxException;
import dev.guestmemfd.linux.Mempolicy;
import dev.guestmemfd.linux.Mman;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * The kernel file under a guest memory file, and the one mapping of all of it through which
 * the library (and the owner, for it) reaches its pages.
 *
 * <p>The library enforces shared/private itself: every backing is mapped whole, read and
 * write, once, and host code only ever sees views of that mapping over shared pages.
 */
public abstract sealed class BackingFile implements AutoCloseable
        permits BackingFile.Memfd, BackingFile.Secret, BackingFile.KernelGuestMemfd, BackingFile.Hugetlb {
    private final int fd;
    private final long size;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment pages;
    /** Arenas over the owner's view that native calls held when their binding ended. */
    private final java.util.List<Arena> heldViews = new java.util.ArrayList<>();

    BackingFile(int fd, long size) {
        this(fd, size, Mman.MAP_SHARED | Mman.MAP_NORESERVE);
    }

    BackingFile(int fd, long size, int mapFlags) {
        this.fd = fd;
        this.size = size;
        try {
            this.pages = Mman.mmap(arena, size, Mman.PROT_READ | Mman.PROT_WRITE, mapFlags, fd, 0);
        } catch (LinuxException e) {
            arena.close();
            Fd.close(fd);
            throw e;
        }
    }

    /** {@return {@code fd}, its size set; closed again when that fails} */
    static int sized(int fd, long size) {
        try {
            Fd.ftruncate(fd, size);
            return fd;
        } catch (LinuxException e) {
            Fd.close(fd);
            throw e;
        }
    }

    /**
     * {@return true when the kernel converts this file's pages itself, with
     * {@code KVM_SET_MEMORY_ATTRIBUTES2} on the file} Only a kernel guest_memfd on a VM whose
     * kernel reports {@code KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES} with the PRIVATE bit.
     */
    public boolean kernelConverts() {
        return false;
    }

    /**
     * Has the kernel set the pages' attribute, where {@link #kernelConverts()}.
     *
     * @param contentMode a {@code KVM_SET_MEMORY_ATTRIBUTES2_*} content mode
     * @throws AttributesRefused with the kernel's errno and {@code error_offset}
     */
    public void setAttributes(long offset, long length, boolean toPrivate, long contentMode) {
        throw new IllegalStateException("the library converts the pages of this file itself");
    }

    /** The kernel refused {@code KVM_SET_MEMORY_ATTRIBUTES2}: its errno, and the offset it named. */
    public static final class AttributesRefused extends RuntimeException {
        private static final long serialVersionUID = 1L;
        private final int errno;
        private final long errorOffset;

        AttributesRefused(LinuxException cause, long errorOffset) {
            super(cause.getMessage(), cause);
            this.errno = cause.errno();
            this.errorOffset = errorOffset;
        }

        /** {@return the kernel's errno} */
        public int errno() {
            return errno;
        }

        /** {@return the kernel's {@code error_offset}, or -1 where it names none} */
        public long errorOffset() {
            return errorOffset;
        }
    }

    /** {@return the file descriptor} */
    public final int fd() {
        return fd;
    }

    /** {@return the file size} */
    public final long size() {
        return size;
    }

    /** {@return the mapping of the whole file} */
    public final MemorySegment pages() {
        return pages;
    }

    /** {@return the size of the file's pages: the unit in which memory is taken and returned} */
    public long blockSize() {
        return Mman.PAGE_SIZE;
    }

    /** {@return true when punching a hole gives the pages back to the system} */
    public boolean returnsPunchedMemory() {
        return true;
    }

    /** Allocates the pages of an aligned range that lies inside the file: the kernel's fallocate. */
    public void allocate(long offset, long length) {
        Fd.fallocate(fd, Fd.FALLOC_FL_KEEP_SIZE, offset, length);
    }

    /** Faults the pages of an aligned range in for writing, as {@code MADV_POPULATE_WRITE} does. */
    public void prefault(long offset, long length) {
        Mman.madvise(pages.asSlice(offset, length), Mman.MADV_POPULATE_WRITE);
    }

    /**
     * {@return true when a memory policy set on the library's mapping belongs to the file's
     * range} (the kernel keeps a shared policy per range of the file: shmem does), so that
     * every mapping, {@code fallocate} and the guest allocate by it. Where it is false the
     * kernel would keep the policy on that one mapping only, and the guest's and host's own
     * faults would ignore it.
     */
    public boolean keepsFilePolicy() {
        return false;
    }

    /** Sets the memory policy of an aligned range inside the file, moving the pages already allocated where the kernel can. */
    public void setPolicy(long offset, long length, int mode, java.util.BitSet nodes) {
        Mempolicy.mbind(pages.asSlice(offset, length), mode, nodes, Mempolicy.MPOL_MF_MOVE);
    }

    /** {@return the memory policy of the page at {@code offset}, as the kernel reports it} */
    public Mempolicy.Policy policy(long offset) {
        return Mempolicy.policyAt(pages.asSlice(offset, Mman.PAGE_SIZE));
    }

    /** Frees (or zeroes in place) the pages of an aligned range that lies inside the file: the kernel's punch hole. */
    public void punch(long offset, long length) {
        Fd.fallocate(fd, Fd.FALLOC_FL_KEEP_SIZE | Fd.FALLOC_FL_PUNCH_HOLE, offset, length);
    }

    /**
     * Writes into {@code residency} one byte per page of {@code [offset, offset + length)},
     * bit 0 set where the page is allocated.
     */
    public void residency(long offset, long length, MemorySegment residency) {
        Mman.mincore(pages.asSlice(offset, length), residency);
    }

    /**
     * Keeps {@code view}, an arena of segments over the owner's view that a native call holds
     * so that it cannot be closed now: the reaper closes it once the call lets go, and the
     * owner's view stays mapped until then (a binding that ends while its segment is in a
     * native call).
     */
    public void keep(Arena view) {
        synchronized (heldViews) {
            heldViews.add(view);
        }
        Reaper.schedule(() -> {
            try {
                view.close();
                return true;
            } catch (IllegalStateException stillHeld) {
                return false;
            }
        });
    }

    private boolean viewsStillHeld() {
        synchronized (heldViews) {
            heldViews.removeIf(view -> !view.scope().isAlive());
            return !heldViews.isEmpty();
        }
    }

    /**
     * Unmaps the owner's view and closes the file descriptor; never throws. When a native call
     * still holds the view (through an owner's segment), the view's pages become anonymous at
     * once and the addresses stay reserved until the {@link Reaper} can close its arena: no
     * later mapping can take them while the segment can still reach them.
     */
    @Override
    public void close() {
        try {
            if (viewsStillHeld()) {
                throw new IllegalStateException("a binding's view is held by a native call");
            }
            arena.close();
        } catch (IllegalStateException heldByNativeCall) {
            try {
                Mman.mmapFixed(pages.address(), size, Mman.PROT_READ | Mman.PROT_WRITE,
                        Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_NORESERVE, -1, 0);
            } catch (LinuxException e) {
                // The file stays mapped (the mapping keeps it alive) until the arena closes.
            }
            Reaper.schedule(() -> {
                if (viewsStillHeld()) {
                    return false;
                }
                try {
                    arena.close();
                    return true;
                } catch (IllegalStateException stillHeld) {
                    return false;
                }
            });
        }
        try {
            Fd.close(fd);
        } catch (LinuxException e) {
            // close(2) releases the descriptor even when it reports an error.
        }
    }

    /** A memfd: fallocate and punch hole are the kernel's (the defaults). */
    public static final class Memfd extends BackingFile {
        public Memfd(long size) {
            super(create(size), size);
        }

        private static int create(long size) {
            return sized(dev.guestmemfd.linux.Memfd.create("guestmemfd", dev.guestmemfd.linux.Memfd.MFD_CLOEXEC), size);
        }

        /** shmem keeps a shared policy per range of the file. */
        @Override
        public boolean keepsFilePolicy() {
            return true;
        }
    }

    /**
     * A memfd_secret. The kernel refuses fallocate and every way of freeing part of it, so
     * allocation faults the pages in and a punch zeroes them where they are.
     */
    public static final class Secret extends BackingFile {
        public Secret(long size) {
            super(create(size), size);
        }

        private static int create(long size) {
            return sized(dev.guestmemfd.linux.Memfd.createSecret(dev.guestmemfd.linux.Memfd.SECRET_CLOEXEC), size);
        }

        @Override
        public boolean returnsPunchedMemory() {
            return false;
        }

        @Override
        public void allocate(long offset, long length) {
            prefault(offset, length);
        }

        @Override
        public void prefault(long offset, long length) {
            // MADV_POPULATE_WRITE goes through GUP, which secret memory refuses (EINVAL). An
            // atomic add of zero faults each page in for writing without changing a byte,
            // even while others write to it.
            MemorySegment range = pages().asSlice(offset, length);
            for (long p = 0; p < length; p += Mman.PAGE_SIZE) {
                TOUCH.getAndAdd(range, p, 0);
            }
        }

        private static final java.lang.invoke.VarHandle TOUCH = java.lang.foreign.ValueLayout.JAVA_INT.varHandle();

        @Override
        public void punch(long offset, long length) {
            // Zero only what is allocated: touching a hole would allocate it.
            forEachResidentRun(this, offset, length, (o, l) -> pages().asSlice(o, l).fill((byte) 0));
        }
    }

    /** The kernel's guest_memfd, created on a VM with MMAP and INIT_SHARED so the library can map it. */
    public static final class KernelGuestMemfd extends BackingFile {
        private final int vmFdToClose;
        private final boolean kernelConverts;

        /**
         * @param fd             a guest_memfd of {@code size} bytes
         * @param vmFdToClose    the VM created only for this file, closed with it, or -1
         * @param kernelConverts whether the file's VM converts pages in place itself
         */
        public KernelGuestMemfd(int fd, long size, int vmFdToClose, boolean kernelConverts) {
            super(fd, size);
            this.vmFdToClose = vmFdToClose;
            this.kernelConverts = kernelConverts;
        }

        /**
         * {@return true when guest_memfd files of the VM {@code vmFd} take
         * {@code KVM_SET_MEMORY_ATTRIBUTES2} with the PRIVATE attribute} Asked of the VM, as the
         * series answers per VM type: a VM type without private memory (the default type on
         * x86) reports 0 even on a kernel that has the ioctl.
         */
        public static boolean convertsInPlace(int vmFd) {
            try {
                long attributes = Ioctl.ioctl(vmFd, KvmUapi.KVM_CHECK_EXTENSION, KvmUapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES);
                return (attributes & KvmUapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) != 0;
            } catch (LinuxException e) {
                return false;  // a kernel that does not know the number may refuse the question
            }
        }

        @Override
        public boolean kernelConverts() {
            return kernelConverts;
        }

        @Override
        public void setAttributes(long offset, long length, boolean toPrivate, long contentMode) {
            if (!kernelConverts) {
                super.setAttributes(offset, length, toPrivate, contentMode);
            }
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment args = new KvmUapi.MemoryAttributes2(offset, length,
                        toPrivate ? KvmUapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0, contentMode).toSegment(arena);
                try {
                    Ioctl.ioctl(fd(), KvmUapi.KVM_SET_MEMORY_ATTRIBUTES2, args);
                } catch (LinuxException e) {
                    boolean named = e.errno() == dev.guestmemfd.linux.Errno.EAGAIN.number()
                            || e.errno() == dev.guestmemfd.linux.Errno.EOPNOTSUPP.number();
                    throw new AttributesRefused(e, named ? KvmUapi.MemoryAttributes2.errorOffset(args) : -1);
                }
            }
        }

        /**
         * {@return a guest_memfd of {@code size} bytes, host-mappable and shared, on the VM
         * {@code vmFd}, or on a VM of its own when {@code vmFd} is negative}
         */
        public static KernelGuestMemfd create(long size, int vmFd) {
            int ownVm = -1;
            if (vmFd < 0) {
                int kvm = KvmDevice.open();
                try {
                    ownVm = Ioctl.ioctl(kvm, KvmUapi.KVM_CREATE_VM, 0);
                } finally {
                    Fd.close(kvm);
                }
                vmFd = ownVm;
            }
            try (Arena arena = Arena.ofConfined()) {
                // The library maps every page itself and enforces private access, so the kernel's
                // file is created host-mappable and shared whatever the caller's flags say.
                MemorySegment args = new KvmUapi.GuestMemfdCreate(size,
                        KvmUapi.GUEST_MEMFD_FLAG_MMAP | KvmUapi.GUEST_MEMFD_FLAG_INIT_SHARED).toSegment(arena);
                int fd = Ioctl.ioctl(vmFd, KvmUapi.KVM_CREATE_GUEST_MEMFD, args);
                return new KernelGuestMemfd(fd, size, ownVm, convertsInPlace(vmFd));
            } catch (LinuxException e) {
                if (ownVm >= 0) {
                    Fd.close(ownVm);
                }
                throw e;
            }
        }

        @Override
        public void close() {
            super.close();
            if (vmFdToClose >= 0) {
                Fd.close(vmFdToClose);
            }
        }
    }

    /**
     * A memfd of huge pages from the hugetlb pool. The owner's mapping is made without
     * {@code MAP_NORESERVE}, so creating the file reserves all of it in the pool: the kernel
     * refuses (ENOMEM) a file the pool cannot hold instead of killing the process later with
     * SIGBUS on a touch. Punching 4 KiB pieces of a huge page zeroes them in place (the
     * kernel's hugetlbfs does that itself); a punch of a whole huge page returns it and its
     * reservation to the pool.
     *
     * <p>The kernel reports a hugetlb page resident ({@code mincore}) only in the mappings
     * whose page tables hold it, not by the page cache, so residency here is that of the
     * owner's mapping together with the mappings {@link #alsoMappedBy} names; allocation maps
     * the new pages into the owner's mapping at once, which also spares the guest's first
     * touch its fault.
     */
    public static final class Hugetlb extends BackingFile {
        private final long hugePage;
        /** Punches and the residency kept for a host mapping that goes away must not interleave. */
        private final Object punchLock = new Object();
        private volatile Residency others;

        public Hugetlb(long size, long hugePage) {
            super(sized(memfd(hugePage), size), size, Mman.MAP_SHARED);
            this.hugePage = hugePage;
        }

        /** Makes a hugetlb memfd of {@code hugePage}-byte pages and closes it: fails as creating one would. */
        static void probe(long hugePage) {
            Fd.close(memfd(hugePage));
        }

        private static int memfd(long hugePage) {
            int size = hugePage == 1L << 30 ? dev.guestmemfd.linux.Memfd.MFD_HUGE_1GB : dev.guestmemfd.linux.Memfd.MFD_HUGE_2MB;
            return dev.guestmemfd.linux.Memfd.create("guestmemfd",
                    dev.guestmemfd.linux.Memfd.MFD_CLOEXEC | dev.guestmemfd.linux.Memfd.MFD_HUGETLB | size);
        }

        @Override
        public long blockSize() {
            return hugePage;
        }

        /** Names the other mappings whose resident pages count too (the host's). */
        public void alsoMappedBy(Residency residency) {
            others = residency;
        }

        /** {@return the lock that punches hold} */
        public Object punchLock() {
            return punchLock;
        }

        /**
         * Allocates the huge pages under the range and maps them into the owner's mapping. All
         * or nothing: when the pool runs out (ENOSPC) the huge pages this call added are
         * punched again before the error is thrown.
         */
        @Override
        public void allocate(long offset, long length) {
            long start = offset / hugePage * hugePage;
            long end = Math.min(size(), (offset + length + hugePage - 1) / hugePage * hugePage);
            java.util.List<long[]> before = new java.util.ArrayList<>();
            forEachResidentRun(this, start, end - start, (o, l) -> before.add(new long[] {o, o + l}));
            try {
                Fd.fallocate(fd(), Fd.FALLOC_FL_KEEP_SIZE, offset, length);
            } catch (LinuxException e) {
                long at = start;
                for (long[] run : before) {
                    if (run[0] > at) {
                        punchQuietly(at, run[0] - at);
                    }
                    at = Math.max(at, run[1]);
                }
                if (end > at) {
                    punchQuietly(at, end - at);
                }
                throw e;
            }
            // The pages are in the file now: mapping them costs one entry per huge page.
            Mman.madvise(pages().asSlice(start, end - start), Mman.MADV_POPULATE_WRITE);
        }

        private void punchQuietly(long offset, long length) {
            try {
                punch(offset, length);
            } catch (LinuxException ignored) {
                // A punch of whole huge pages inside the file does not fail.
            }
        }

        @Override
        public void punch(long offset, long length) {
            synchronized (punchLock) {
                super.punch(offset, length);
            }
        }

        @Override
        public void residency(long offset, long length, MemorySegment residency) {
            super.residency(offset, length, residency);
            Residency more = others;
            if (more != null) {
                more.addResident(offset, length, residency);
            }
        }
    }

    /** Adds the pages resident in other mappings of a file to a {@code mincore} vector. */
    public interface Residency {
        /** Sets bit 0 of the byte of each page of {@code [offset, offset + length)} resident in these mappings. */
        void addResident(long offset, long length, MemorySegment residency);
    }

    /** Receives one run of pages: file offset and length in bytes. */
    public interface RunConsumer {
        void accept(long offset, long length);
    }

    private static final long RESIDENCY_CHUNK_PAGES = 1L << 18;  // 1 GiB of pages per mincore call

    /** Calls {@code run} for each maximal run of allocated pages in {@code [offset, offset + length)}. */
    public static void forEachResidentRun(BackingFile file, long offset, long length, RunConsumer run) {
        long page = Mman.PAGE_SIZE;
        try (Arena scratch = Arena.ofConfined()) {
            MemorySegment vec = scratch.allocate(Math.min(RESIDENCY_CHUNK_PAGES, length / page));
            long runStart = -1;
            for (long chunk = offset; chunk < offset + length; chunk += RESIDENCY_CHUNK_PAGES * page) {
                long chunkLength = Math.min(RESIDENCY_CHUNK_PAGES * page, offset + length - chunk);
                file.residency(chunk, chunkLength, vec);
                for (long i = 0; i < chunkLength / page; i++) {
                    boolean resident = (vec.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i) & 1) != 0;
                    long at = chunk + i * page;
                    if (resident && runStart < 0) {
                        runStart = at;
                    } else if (!resident && runStart >= 0) {
                        run.accept(runStart, at - runStart);
                        runStart = -1;
                    }
                }
            }
            if (runStart >= 0) {
                run.accept(runStart, offset + length - runStart);
            }
        }
    }
}
