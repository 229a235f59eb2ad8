package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Set;
import org.junit.jupiter.api.Test;

/** The README's example, as it is written there. */
class GuestMemoryExampleTest {
    @Test
    void theReadmeExampleDoesWhatItSays() {
        try (GuestMemory memory = GuestMemory.create(16 << 20, Set.of(Flag.MMAP, Flag.INIT_SHARED));
             HostMapping host = memory.map(0, 16 << 20)) {
            host.write(0x1000, "hello guest".getBytes());
            Binding vm = memory.bind(new Owner() { }, 0, 16 << 20);
            memory.convert(0x1000, 4096, Attribute.PRIVATE, Content.PRESERVE);
            assertThat(vm.pages().getString(0x1000)).isEqualTo("hello guest");
            assertThatThrownBy(() -> host.read(0x1000, 11)).isInstanceOf(HostAccessFault.class)
                    .hasMessageContaining("EFAULT");
        }
    }
}
