package dev.guestmemfd;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Vm;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The core's model-based property with a real KVM VM as the owner of each file: kernel-backed
 * files are created on that VM, as KVM binds a guest_memfd only into its own VM.
 */
class KvmOwnerPropertyTest extends GuestMemoryModelTest {
    private Kvm kvm;
    private Vm vm;

    /** Skipped, with the reason in the reports and the log, on a host without a usable {@code /dev/kvm}. */
    @Test
    @Timeout(value = 10, unit = TimeUnit.MINUTES)
    @Override
    void theLibraryBehavesLikeThePerPageModel() {
        String reason = "needs /dev/kvm, which this host lacks: " + Kvm.unavailableReason().orElse("?");
        if (!Kvm.available()) {
            // Surefire's console line only counts skips; the reason goes to the log as well.
            System.out.println("KvmOwnerPropertyTest: skipped: " + reason);
        }
        assumeTrue(Kvm.available(), reason);
        super.theLibraryBehavesLikeThePerPageModel();
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
