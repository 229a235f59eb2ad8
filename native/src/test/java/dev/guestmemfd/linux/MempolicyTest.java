package dev.guestmemfd.linux;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.BitSet;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * {@code mbind} and {@code get_mempolicy} against the real kernel, and which files keep a
 * policy set through one mapping for every mapping (a shared policy per range of the file).
 */
@ExtendWith(NoLeaks.class)
class MempolicyTest {
    static final long PAGE = Mman.PAGE_SIZE;
    static final long SIZE = 8 * PAGE;

    static BitSet nodes(int... numbers) {
        BitSet set = new BitSet();
        for (int n : numbers) {
            set.set(n);
        }
        return set;
    }

    static void assertErrno(ThrowingCallable call, Errno errno) {
        assertThatThrownBy(call).isInstanceOfSatisfying(LinuxException.class, e -> assertThat(e.errnoName()).isEqualTo(errno.name()));
    }

    /**
     * Sets BIND {0} on page 2 through one mapping of {@code fd} and {@return the policy another
     * mapping of the same file reports there}, after checking the first reports its own.
     */
    static Mempolicy.Policy policySeenThroughAnotherMapping(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment first = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            MemorySegment second = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            Mempolicy.mbind(first.asSlice(2 * PAGE, PAGE), Mempolicy.MPOL_BIND, nodes(0), 0);
            assertThat(Mempolicy.policyAt(first.asSlice(2 * PAGE))).isEqualTo(new Mempolicy.Policy(Mempolicy.MPOL_BIND, nodes(0)));
            assertThat(Mempolicy.policyAt(first.asSlice(3 * PAGE)).mode()).isEqualTo(Mempolicy.MPOL_DEFAULT);
            return Mempolicy.policyAt(second.asSlice(2 * PAGE));
        }
    }

    @Test
    void aMemfdKeepsThePolicyOnTheFileForEveryMapping() {
        int fd = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
        try {
            Fd.ftruncate(fd, SIZE);
            assertThat(policySeenThroughAnotherMapping(fd)).isEqualTo(new Mempolicy.Policy(Mempolicy.MPOL_BIND, nodes(0)));
        } finally {
            Fd.close(fd);
        }
    }

    @Test
    void memfdSecretKeepsThePolicyOnTheOneMappingOnly() {
        int fd;
        try {
            fd = Memfd.createSecret(Memfd.SECRET_CLOEXEC);
        } catch (LinuxException e) {
            Assumptions.abort("memfd_secret: " + e.getMessage());
            return;
        }
        try {
            Fd.ftruncate(fd, SIZE);
            // secretmem has no shared policy: mbind only sets the mapping's, which its faults ignore.
            assertThat(policySeenThroughAnotherMapping(fd).mode()).isEqualTo(Mempolicy.MPOL_DEFAULT);
        } finally {
            Fd.close(fd);
        }
    }

    @Test
    void theKernelsGuestMemfdKeepsAFilePolicyOnlyFromLinux619() {
        Assumptions.assumeTrue(KvmDevice.available(), () -> "no /dev/kvm: " + KvmDevice.unavailableReason().orElse(""));
        int kvm = KvmDevice.open();
        int vm = -1;
        int fd = -1;
        try (Arena arena = Arena.ofConfined()) {
            vm = Ioctl.ioctl(kvm, KvmUapi.KVM_CREATE_VM, 0);
            MemorySegment args = new KvmUapi.GuestMemfdCreate(SIZE,
                    KvmUapi.GUEST_MEMFD_FLAG_MMAP | KvmUapi.GUEST_MEMFD_FLAG_INIT_SHARED).toSegment(arena);
            fd = Ioctl.ioctl(vm, KvmUapi.KVM_CREATE_GUEST_MEMFD, args);
            Mempolicy.Policy seen = policySeenThroughAnotherMapping(fd);
            String[] release = System.getProperty("os.version").split("[.-]");
            int version = Integer.parseInt(release[0]) * 100 + Integer.parseInt(release[1]);
            if (version < 619) {
                assertThat(seen.mode()).as("before 6.19 guest_memfd keeps no shared policy").isEqualTo(Mempolicy.MPOL_DEFAULT);
            }
        } finally {
            if (fd >= 0) {
                Fd.close(fd);
            }
            if (vm >= 0) {
                Fd.close(vm);
            }
            Fd.close(kvm);
        }
    }

    @Test
    void theKernelRefusesBadModesNodesAndRanges() {
        int fd = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
        try (Arena arena = Arena.ofConfined()) {
            Fd.ftruncate(fd, SIZE);
            MemorySegment map = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            MemorySegment page = map.asSlice(PAGE, PAGE);
            assertErrno(() -> Mempolicy.mbind(page, Mempolicy.MPOL_BIND, new BitSet(), 0), Errno.EINVAL);
            assertErrno(() -> Mempolicy.mbind(page, 99, nodes(0), 0), Errno.EINVAL);
            assertErrno(() -> Mempolicy.mbind(map.asSlice(1, PAGE), Mempolicy.MPOL_BIND, nodes(0), 0), Errno.EINVAL);
            assertErrno(() -> Mempolicy.mbind(page, Mempolicy.MPOL_BIND, nodes(Mempolicy.MAX_NODES), 0), Errno.EINVAL);
            BitSet absent = new BitSet();
            absent.set(Mempolicy.memoryNodes().length());  // the first node number past the host's
            assertErrno(() -> Mempolicy.mbind(page, Mempolicy.MPOL_BIND, absent, 0), Errno.EINVAL);
            assertThat(Mempolicy.policyAt(page).mode()).as("nothing was set").isEqualTo(Mempolicy.MPOL_DEFAULT);
            Mempolicy.mbind(page, Mempolicy.MPOL_INTERLEAVE, Mempolicy.memoryNodes(), Mempolicy.MPOL_MF_MOVE);
            assertThat(Mempolicy.policyAt(page)).isEqualTo(new Mempolicy.Policy(Mempolicy.MPOL_INTERLEAVE, Mempolicy.memoryNodes()));
            Mempolicy.mbind(page, Mempolicy.MPOL_DEFAULT, new BitSet(), 0);
            assertThat(Mempolicy.policyAt(page).mode()).isEqualTo(Mempolicy.MPOL_DEFAULT);
        } finally {
            Fd.close(fd);
        }
    }

    @Test
    void theHostHasANodeWithMemory() {
        assertThat(Mempolicy.memoryNodes().isEmpty()).isFalse();
    }
}
