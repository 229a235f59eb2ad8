package dev.guestmemfd;

import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Vm;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;

/** The core's contract, with a real KVM VM as the owner of the whole file (one memslot). */
class KvmOwnerContractTest extends GuestMemoryContract {
    private Kvm kvm;
    private Vm vm;
    private int slots;

    @BeforeAll
    static void needsKvm() {
        org.junit.jupiter.api.Assumptions.assumeTrue(Kvm.available(), "needs /dev/kvm, which this host lacks");
    }

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
