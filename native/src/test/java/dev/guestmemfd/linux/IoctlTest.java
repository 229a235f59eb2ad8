package dev.guestmemfd.linux;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.lang.foreign.MemoryLayout;
import org.junit.jupiter.api.Test;

class IoctlTest {
    @Test
    void derivedRequestNumbersMatchTheKernels() {
        assertThat(KvmUapi.KVM_CREATE_GUEST_MEMFD).isEqualTo(0xC040AED4L);
        assertThat(KvmUapi.KVM_SET_USER_MEMORY_REGION2).isEqualTo(0x40A0AE49L);
        assertThat(KvmUapi.KVM_SET_MEMORY_ATTRIBUTES).isEqualTo(0x4020AED2L);
        assertThat(KvmUapi.KVM_RUN).isEqualTo(0xAE80L);
        assertThat(KvmUapi.KVM_CREATE_VM).isEqualTo(0xAE01L);
        assertThat(KvmUapi.KVM_CHECK_EXTENSION).isEqualTo(0xAE03L);
    }

    @Test
    void structLayoutsHaveTheKernelsSizes() {
        assertThat(KvmUapi.GuestMemfdCreate.LAYOUT.byteSize()).isEqualTo(64);
        assertThat(KvmUapi.UserspaceMemoryRegion2.LAYOUT.byteSize()).isEqualTo(160);
        assertThat(KvmUapi.MemoryAttributes.LAYOUT.byteSize()).isEqualTo(32);
        assertThat(Stat.LAYOUT.byteSize()).isEqualTo(144);
    }

    @Test
    void oversizedArgumentIsRefused() {
        assertThatThrownBy(() -> Ioctl.iow(0xAE, 1, MemoryLayout.paddingLayout(1 << 14)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("ioctl argument of 16384 bytes does not fit _IOC's size field");
    }

    @Test
    void ioctlOnAMemfdIsNotATty() {
        int fd = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
        try {
            assertThatThrownBy(() -> Ioctl.ioctl(fd, KvmUapi.KVM_GET_API_VERSION, 0))
                    .isInstanceOfSatisfying(LinuxException.class, e -> assertThat(e.errnoName()).isEqualTo("ENOTTY"));
            assertThat(Ioctl.ioctlOrErrno(fd, KvmUapi.KVM_GET_API_VERSION, 0)).isEqualTo(-Errno.ENOTTY.number());
        } finally {
            Fd.close(fd);
        }
    }
}
