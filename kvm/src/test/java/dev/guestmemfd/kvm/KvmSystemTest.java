package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.linux.KvmVcpuUapi;
import dev.guestmemfd.testing.RequiresKvm;
import org.junit.jupiter.api.Test;

@RequiresKvm
class KvmSystemTest {
    @Test
    void vcpuRequestNumbersMatchTheKernels() {
        assertThat(KvmVcpuUapi.KVM_GET_REGS).isEqualTo(0x8090AE81L);
        assertThat(KvmVcpuUapi.KVM_SET_REGS).isEqualTo(0x4090AE82L);
        assertThat(KvmVcpuUapi.KVM_GET_SREGS).isEqualTo(0x8138AE83L);
        assertThat(KvmVcpuUapi.KVM_SET_SREGS).isEqualTo(0x4138AE84L);
        assertThat(KvmVcpuUapi.KVM_SET_SIGNAL_MASK).isEqualTo(0x4004AE8BL);
        assertThat(KvmVcpuUapi.KVM_ENABLE_CAP).isEqualTo(0x4068AEA3L);
        assertThat(KvmVcpuUapi.KVM_GET_DIRTY_LOG).isEqualTo(0x4010AE42L);
    }

    @Test
    void capabilitiesOfThisHost() {
        try (Kvm kvm = Kvm.open()) {
            Capabilities caps = kvm.capabilities();
            assertThat(caps.apiVersion()).isEqualTo(12);
            assertThat(caps.userMemory2()).isTrue();
            assertThat(caps.vmTypes() & 1).as("the default VM type").isOne();
            if (caps.guestMemfd()) {
                assertThat(caps.guestMemfdFlags() & 1).as("guest_memfd MMAP flag").isOne();
            }
        }
    }

    @Test
    void registersRoundTripThroughTheKernel() {
        try (Kvm kvm = Kvm.open(); Vm vm = kvm.createVm()) {
            Vcpu vcpu = vm.createVcpu(0);
            Registers r = Registers.start(0x10000, 0x8000, 0x1234, 0x5678);
            vcpu.setRegisters(r);
            assertThat(vcpu.registers()).isEqualTo(r);
            SpecialRegisters s = vcpu.specialRegisters().longMode(GuestLayout.PML4);
            vcpu.setSpecialRegisters(s);
            SpecialRegisters back = vcpu.specialRegisters();
            assertThat(back.cr3()).isEqualTo(GuestLayout.PML4);
            assertThat(back.efer() & SpecialRegisters.EFER_LMA).isNotZero();
            assertThat(back.cs().l()).isEqualTo((byte) 1);
        }
    }
}
