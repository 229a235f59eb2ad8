package dev.guestmemfd;

import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Vm;
import dev.guestmemfd.testing.RequiresKvm;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;

/** The core's contract, with a real KVM VM as the owner of the whole file (one memslot). */
@RequiresKvm
class KvmOwnerContractTest extends GuestMemoryContract {
    private Kvm kvm;
    private Vm vm;
    private int slots;

    @BeforeEach
    void openVm() {
        kvm = Kvm.open();
        vm = kvm.createVm();
    }

    @AfterEach
    void closeVm() {
        vm.close();
        kvm.close();
    }

    @Override
    Backing backing() {
        return Backing.MEMFD;
    }

    @Override
    Binding bindOwnerUnderTest(GuestMemory m) {
        // Some tests create two files: each gets its own slot and guest-physical range.
        int slot = slots++;
        return vm.bind(m, slot, slot * (1L << 30), 0, m.size(), false).binding();
    }
}
