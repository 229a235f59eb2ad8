package dev.guestmemfd.internal;

import dev.guestmemfd.linux.KvmDevice;
import dev.guestmemfd.linux.LinuxException;
import java.util.Optional;
import java.util.function.Supplier;

/**
 * Asks the host once, by creating a one-page file of each kind, which backings it offers and
 * why not. The answers are kept for the life of the process: hosts do not gain or lose
 * memfd_secret or {@code /dev/kvm} while a JVM runs.
 */
public final class BackingProbe {
    private BackingProbe() {
    }

    /** {@return why a memfd cannot be made here, or empty} */
    public static Optional<String> memfd() {
        return Memfd.ANSWER;
    }

    /** {@return why a memfd_secret cannot be made here, or empty} */
    public static Optional<String> secret() {
        return Secret.ANSWER;
    }

    /** {@return why the kernel's guest_memfd cannot be made here, or empty} */
    public static Optional<String> kernel() {
        return Kernel.ANSWER;
    }

    /**
     * {@return why a hugetlb memfd of {@code pageSize}-byte pages cannot be made here, or empty}
     * The kernel's answer is kept; the pool is read at every call.
     */
    public static Optional<String> hugetlb(long pageSize) {
        Optional<String> kernel = pageSize == Hugetlb2M.SIZE ? Hugetlb2M.ANSWER : Hugetlb1G.ANSWER;
        if (kernel.isPresent()) {
            return kernel;
        }
        String size = pageSize >= 1L << 30 ? (pageSize >> 30) + " GiB" : (pageSize >> 20) + " MiB";
        var dir = java.nio.file.Path.of("/sys/kernel/mm/hugepages", "hugepages-" + pageSize / 1024 + "kB");
        var pool = dev.guestmemfd.HugePagePool.of(pageSize);
        if (pool.isEmpty()) {
            return Optional.of("this host has no pool of " + size + " huge pages (" + dir + " is missing)");
        }
        if (pool.get().available() == 0) {
            String grow = pageSize == Hugetlb2M.SIZE ? "/proc/sys/vm/nr_hugepages" : dir + "/nr_hugepages";
            return Optional.of("no free " + size + " huge page in the pool (" + pool.get().total() + " pages, "
                    + pool.get().free() + " free, " + pool.get().reserved() + " of them reserved): as root, echo N > "
                    + grow);
        }
        return Optional.empty();
    }

    private static final class Hugetlb2M {
        static final long SIZE = 2L << 20;
        static final Optional<String> ANSWER = probe(() -> {
            BackingFile.Hugetlb.probe(SIZE);
            return null;
        }, "memfd_create with MFD_HUGETLB | MFD_HUGE_2MB (the kernel needs CONFIG_HUGETLBFS)");
    }

    private static final class Hugetlb1G {
        static final long SIZE = 1L << 30;
        static final Optional<String> ANSWER = probe(() -> {
            BackingFile.Hugetlb.probe(SIZE);
            return null;
        }, "memfd_create with MFD_HUGETLB | MFD_HUGE_1GB (the kernel needs CONFIG_HUGETLBFS)");
    }

    private static final class Memfd {
        static final Optional<String> ANSWER = probe(() -> new BackingFile.Memfd(dev.guestmemfd.linux.Mman.PAGE_SIZE), "memfd_create");
    }

    private static final class Secret {
        static final Optional<String> ANSWER = probe(() -> new BackingFile.Secret(dev.guestmemfd.linux.Mman.PAGE_SIZE),
                "memfd_secret (the kernel needs CONFIG_SECRETMEM and, before 6.5, secretmem.enable=1)");
    }

    private static final class Kernel {
        static final Optional<String> ANSWER = kvmThenProbe();

        private static Optional<String> kvmThenProbe() {
            Optional<String> kvm = KvmDevice.unavailableReason();
            if (kvm.isPresent()) {
                return kvm;
            }
            return probe(() -> BackingFile.KernelGuestMemfd.create(dev.guestmemfd.linux.Mman.PAGE_SIZE, -1),
                    "KVM_CREATE_GUEST_MEMFD with MMAP and INIT_SHARED (needs Linux 6.18 or newer)");
        }
    }

    private static Optional<String> probe(Supplier<BackingFile> create, String what) {
        try {
            BackingFile file = create.get();
            if (file != null) {
                file.close();
            }
            return Optional.empty();
        } catch (LinuxException e) {
            return Optional.of(what + " failed with " + e.errnoName() + " (" + e.call() + ")");
        }
    }
}
