package dev.guestmemfd.kvm;

import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.Ioctl;
import dev.guestmemfd.linux.KvmDevice;
import dev.guestmemfd.linux.KvmUapi;
import dev.guestmemfd.linux.LinuxException;
import java.nio.file.Path;
import java.util.Optional;

/**
 * The KVM system: {@code /dev/kvm}, its capabilities, and the factory of VMs.
 *
 * @implSpec Thread safe.
 */
public final class Kvm implements AutoCloseable {
    /** The device. */
    public static final Path DEVICE = KvmDevice.PATH;

    private final int fd;

    private Kvm(int fd) {
        this.fd = fd;
    }

    /**
     * {@return true when this process can use {@code /dev/kvm}} False where the host has no
     * device node, where this user may not open it, and under {@code GMEM_NO_KVM=1}.
     */
    public static boolean available() {
        return KvmDevice.available();
    }

    /**
     * {@return why this process cannot use {@code /dev/kvm}, or empty when it can} Names what
     * is missing: the device node, the CPU's virtualization flag, the hypervisor this machine
     * runs under, or the {@code GMEM_NO_KVM} switch.
     */
    public static Optional<String> unavailableReason() {
        return KvmDevice.unavailableReason();
    }

    /**
     * Opens {@code /dev/kvm}.
     *
     * @throws KvmException {@code ENOENT} where there is no KVM, {@code EACCES} without permission
     */
    public static Kvm open() {
        try {
            return new Kvm(KvmDevice.open());
        } catch (LinuxException e) {
            throw new KvmException("open " + DEVICE, e);
        }
    }

    /** {@return the KVM API version} */
    public int apiVersion() {
        return ioctl("KVM_GET_API_VERSION", KvmUapi.KVM_GET_API_VERSION, 0);
    }

    /** {@return the value of {@code KVM_CHECK_EXTENSION} for {@code capability}: 0 when absent} */
    public int checkExtension(int capability) {
        return ioctl("KVM_CHECK_EXTENSION(" + capability + ")", KvmUapi.KVM_CHECK_EXTENSION, capability);
    }

    /** {@return the capabilities that matter to guest memory} */
    public Capabilities capabilities() {
        return new Capabilities(apiVersion(),
                checkExtension(KvmUapi.KVM_CAP_GUEST_MEMFD) > 0,
                checkExtension(KvmUapi.KVM_CAP_GUEST_MEMFD_FLAGS),
                checkExtension(KvmUapi.KVM_CAP_VM_TYPES),
                checkExtension(KvmUapi.KVM_CAP_MEMORY_ATTRIBUTES),
                checkExtension(KvmUapi.KVM_CAP_USER_MEMORY2) > 0,
                checkExtension(KvmUapi.KVM_CAP_EXIT_HYPERCALL));
    }

    /** {@return the size of a vCPU's shared {@code kvm_run} area} */
    int vcpuMmapSize() {
        return ioctl("KVM_GET_VCPU_MMAP_SIZE", KvmUapi.KVM_GET_VCPU_MMAP_SIZE, 0);
    }

    /**
     * Creates a VM of the default type.
     *
     * @throws KvmException with the kernel's errno
     */
    public Vm createVm() {
        int vmFd = ioctl("KVM_CREATE_VM", KvmUapi.KVM_CREATE_VM, 0);
        return new Vm(this, vmFd);
    }

    private int ioctl(String what, long request, long argument) {
        try {
            return Ioctl.ioctl(fd, request, argument);
        } catch (LinuxException e) {
            throw new KvmException(what, e);
        }
    }

    @Override
    public void close() {
        Fd.close(fd);
    }
}
