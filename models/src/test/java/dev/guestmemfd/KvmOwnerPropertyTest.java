package dev.guestmemfd;

import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Vm;
import net.jqwik.api.lifecycle.BeforeContainer;

/**
 * The core's model-based property with a real KVM VM as the owner of each file: kernel-backed
 * files are created on that VM, as KVM binds a guest_memfd only into its own VM.
 */
class KvmOwnerPropertyTest extends GuestMemoryModelTest {
    private Kvm kvm;
    private Vm vm;

    @BeforeContainer
    static void needsKvm() {
        org.junit.jupiter.api.Assumptions.assumeTrue(Kvm.available(), "needs /dev/kvm, which this host lacks");
    }

    @Override
    GuestMemory createFile(long size, long flags, Backing backing) {
        kvm = Kvm.open();
        vm = kvm.createVm();
        return backing == Backing.KERNEL ? vm.createGuestMemory(size, flags) : GuestMemory.create(size, flags, backing);
    }

    @Override
    Binding bindOwnerUnderTest(GuestMemory memory) {
        return vm.bind(memory, 0, 0, 0, memory.size(), false).binding();
    }

    @Override
    void afterTry() {
        vm.close();
        kvm.close();
    }
}
