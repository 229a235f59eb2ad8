package dev.guestmemfd;

import static dev.guestmemfd.Errors.assertErrno;

import java.util.Set;
import org.junit.jupiter.api.Test;

class MemfdBackingTest extends GuestMemoryContract {
    @Override
    Backing backing() {
        return Backing.MEMFD;
    }

    @Test
    void noDirectMapNeedsTheSecretBacking() {
        assertErrno(() -> GuestMemory.create(SIZE, Flag.NO_DIRECT_MAP.bit(), Backing.MEMFD), "EINVAL");
        try (GuestMemory m = GuestMemory.create(SIZE, Set.of(Flag.NO_DIRECT_MAP))) {
            org.assertj.core.api.Assertions.assertThat(m.backing()).isEqualTo(Backing.SECRET);
        }
    }
}
