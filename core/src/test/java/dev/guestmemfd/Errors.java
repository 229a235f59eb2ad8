package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.assertj.core.api.ThrowableAssert.ThrowingCallable;

/** Assertions on refused operations. */
final class Errors {
    private Errors() {
    }

    static GuestMemoryException assertErrno(ThrowingCallable call, String errno) {
        GuestMemoryException[] caught = new GuestMemoryException[1];
        assertThatThrownBy(call).isInstanceOfSatisfying(GuestMemoryException.class, e -> {
            assertThat(e.errno().name()).isEqualTo(errno);
            assertThat(e.errno()).isEqualTo(Errno.named(errno));
            assertThat(e.getMessage()).contains(": " + errno + ": ");
            caught[0] = e;
        });
        return caught[0];
    }
}
