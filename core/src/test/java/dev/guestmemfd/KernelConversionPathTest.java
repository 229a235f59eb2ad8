package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.internal.BackingFile;
import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.Ioctl;
import dev.guestmemfd.linux.KvmDevice;
import dev.guestmemfd.linux.KvmUapi;
import dev.guestmemfd.testing.RequiresKvm;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Which conversion a file uses: the kernel's own {@code KVM_SET_MEMORY_ATTRIBUTES2} where the
 * file's VM reports {@code KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES}, the library's elsewhere.
 * No kernel this project runs on has the series, so the kernel path is driven here against
 * the real kernel that lacks it: its refusal must reach the caller with nothing changed.
 */
@Timeout(60)
class KernelConversionPathTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;

    @Test
    void theStructAndTheRequestNumberAreTheSeriesOnes() {
        assertThat(KvmUapi.MemoryAttributes2.LAYOUT.byteSize()).isEqualTo(128);
        // _IOWR(KVMIO, 0xd2, 128 bytes): read and write, the same number as KVM_SET_MEMORY_ATTRIBUTES, another size.
        assertThat(KvmUapi.KVM_SET_MEMORY_ATTRIBUTES2).isEqualTo(0xC080AED2L);
        assertThat(KvmUapi.KVM_SET_MEMORY_ATTRIBUTES2).isNotEqualTo(KvmUapi.KVM_SET_MEMORY_ATTRIBUTES);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = new KvmUapi.MemoryAttributes2(PAGE, 2 * PAGE, KvmUapi.KVM_MEMORY_ATTRIBUTE_PRIVATE,
                    KvmUapi.KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE).toSegment(arena);
            assertThat(s.toArray(java.lang.foreign.ValueLayout.JAVA_LONG)).startsWith(PAGE, 2 * PAGE, 8L, 2L, 0L);
            s.set(java.lang.foreign.ValueLayout.JAVA_LONG, 32, 7 * PAGE);  // where the kernel writes error_offset
            assertThat(KvmUapi.MemoryAttributes2.errorOffset(s)).isEqualTo(7 * PAGE);
        }
    }

    @Test
    void filesOfTheLibrarysOwnBackingsAreConvertedByTheLibrary() {
        for (Backing b : Backing.available()) {
            if (b == Backing.KERNEL) {
                continue;
            }
            try (GuestMemory m = GuestMemory.create(Math.max(4 * PAGE, b.blockSize()), Flag.MMAP.bit(), b)) {
                assertThat(m.kernelConverts()).as("%s", b).isFalse();
            }
        }
    }

    @Test
    @RequiresKvm
    void aKernelFileUsesTheKernelsConversionExactlyWhereItsVmReportsTheCapability() {
        int kvm = KvmDevice.open();
        int vm;
        try {
            vm = Ioctl.ioctl(kvm, KvmUapi.KVM_CREATE_VM, 0);
        } finally {
            Fd.close(kvm);
        }
        try {
            int reported = Ioctl.ioctlOrErrno(vm, KvmUapi.KVM_CHECK_EXTENSION, KvmUapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES);
            boolean expected = reported > 0 && (reported & KvmUapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) != 0;
            assertThat(BackingFile.KernelGuestMemfd.convertsInPlace(vm)).isEqualTo(expected);
            try (GuestMemory m = GuestMemory.createOnVm(4 * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), vm)) {
                assertThat(m.kernelConverts()).isEqualTo(expected);
            }
            // A VM of the default type keeps no private memory, so the series answers 0 for it
            // even on a kernel that has the ioctl: the library's own files always convert alone.
            assertThat(expected).as("KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES of a default-type VM").isFalse();
        } finally {
            Fd.close(vm);
        }
    }

    private static String linkOf(int fd) {
        try {
            return java.nio.file.Files.readSymbolicLink(java.nio.file.Path.of("/proc/self/fd/" + fd)).toString();
        } catch (java.io.IOException closed) {
            return "closed";
        }
    }

    /** An owner that accepts everything and remembers what it was told. */
    static final class Recorder implements Owner {
        final List<String> calls = new ArrayList<>();

        @Override
        public void prepareInaccessible(Binding b, long offset, long length, Content content) {
            calls.add("prepare private " + offset);
        }

        @Override
        public void rollback(Binding b, long offset, long length, Attribute attribute) {
            calls.add("rollback to " + attribute + " " + offset);
        }
    }

    @Test
    @RequiresKvm
    void theKernelPathRefusedByAKernelWithoutTheIoctlChangesNothingAndRollsTheOwnersBack() {
        int kvm = KvmDevice.open();
        int vm;
        try {
            vm = Ioctl.ioctl(kvm, KvmUapi.KVM_CREATE_VM, 0);
        } finally {
            Fd.close(kvm);
        }
        try {
            org.junit.jupiter.api.Assumptions.assumeFalse(BackingFile.KernelGuestMemfd.convertsInPlace(vm),
                    "this kernel converts in place: the path runs for real elsewhere");
            int fd;
            try (Arena arena = Arena.ofConfined()) {
                fd = Ioctl.ioctl(vm, KvmUapi.KVM_CREATE_GUEST_MEMFD, new KvmUapi.GuestMemfdCreate(8 * PAGE,
                        KvmUapi.GUEST_MEMFD_FLAG_MMAP | KvmUapi.GUEST_MEMFD_FLAG_INIT_SHARED).toSegment(arena));
            }
            // The file as a kernel with the series would give it: the library takes the kernel's path.
            BackingFile file = new BackingFile.KernelGuestMemfd(fd, 8 * PAGE, -1, true);
            try (GuestMemory m = new GuestMemory(file, Backing.KERNEL, Set.of(Flag.MMAP, Flag.INIT_SHARED));
                 HostMapping map = m.map(0, 8 * PAGE)) {
                assertThat(m.kernelConverts()).isTrue();
                map.write(PAGE, new byte[] {5, 5, 5});
                Recorder owner = new Recorder();
                m.bind(owner, 0, 8 * PAGE);
                List<PageRun> before = m.pageRuns();
                GuestMemoryException e = Errors.assertErrno(
                        () -> m.convert(PAGE, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE), "ENOTTY");
                assertThat(e.errorOffset()).as("ENOTTY names no page").isEqualTo(-1);
                assertThat(e.getMessage()).contains("KVM_SET_MEMORY_ATTRIBUTES2");
                assertThat(m.pageRuns()).isEqualTo(before);
                assertThat(m.conversions()).isZero();
                assertThat(owner.calls).containsExactly("prepare private " + PAGE, "rollback to SHARED " + PAGE);
                assertThat(map.read(PAGE, 3)).containsExactly(5, 5, 5);
                // The library's own rules come first: ZERO towards private never reaches the kernel.
                Errors.assertErrno(() -> m.convert(PAGE, PAGE, Attribute.PRIVATE, Content.ZERO), "EOPNOTSUPP");
                assertThat(owner.calls).hasSize(2);
            }
        } finally {
            Fd.close(vm);
        }
    }

    @Test
    @RequiresKvm
    void aPrivateFileTheKernelCannotMakePrivateIsNotCreatedAndItsDescriptorIsClosed() {
        int kvm = KvmDevice.open();
        int vm;
        try {
            vm = Ioctl.ioctl(kvm, KvmUapi.KVM_CREATE_VM, 0);
        } finally {
            Fd.close(kvm);
        }
        try {
            org.junit.jupiter.api.Assumptions.assumeFalse(BackingFile.KernelGuestMemfd.convertsInPlace(vm),
                    "this kernel converts in place: the path runs for real elsewhere");
            int fd;
            try (Arena arena = Arena.ofConfined()) {
                fd = Ioctl.ioctl(vm, KvmUapi.KVM_CREATE_GUEST_MEMFD, new KvmUapi.GuestMemfdCreate(4 * PAGE,
                        KvmUapi.GUEST_MEMFD_FLAG_MMAP | KvmUapi.GUEST_MEMFD_FLAG_INIT_SHARED).toSegment(arena));
            }
            BackingFile file = new BackingFile.KernelGuestMemfd(fd, 4 * PAGE, -1, true);
            Errors.assertErrno(() -> new GuestMemory(file, Backing.KERNEL, Set.of(Flag.MMAP)), "ENOTTY");
            assertThat(linkOf(fd)).as("the guest_memfd's descriptor is closed").doesNotContain("gmem");
        } finally {
            Fd.close(vm);
        }
    }
}
