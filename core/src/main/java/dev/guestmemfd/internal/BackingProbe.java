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
            create.get().close();
            return Optional.empty();
        } catch (LinuxException e) {
            return Optional.of(what + " failed with " + e.errnoName() + " (" + e.call() + ")");
        }
    }
}
