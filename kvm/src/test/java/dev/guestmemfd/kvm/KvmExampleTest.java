package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.linux.KvmDevice;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The example of the package's Javadoc ({@code package-info.java} shows the region below with
 * {@code @snippet}), run on every host: it boots a guest where {@code /dev/kvm} is usable and
 * says why not elsewhere, and both branches are checked.
 */
class KvmExampleTest {
    @Test
    @Timeout(120)
    void theExampleRunsAGuestOrSaysWhyItCannot() throws Exception {
        assertThat(KvmExampleTest.class.desiredAssertionStatus()).as("the example states its results with assert").isTrue();
        ByteArrayOutputStream printed = new ByteArrayOutputStream();
        PrintStream err = System.err;
        System.setErr(new PrintStream(printed, true, StandardCharsets.UTF_8));
        try {
            // @start region="example"
            if (Kvm.available()) {
                try (Kvm kvm = Kvm.open();
                     Machine guest = Machine.boot(kvm, Machine.Config.of(GuestProgram.HELLO, Backing.MEMFD, 1))) {
                    Machine.Outcome outcome = guest.run(Duration.ofSeconds(60));
                    assert outcome.serial().startsWith("Hello from a guest");                 // its serial port
                    assert guest.memory().attribute(GuestLayout.CODE) == Attribute.PRIVATE;   // its code: not the host's
                }
            } else {
                System.err.println("no guests here: " + Kvm.unavailableReason().orElseThrow());
            }
            // @end
        } finally {
            System.setErr(err);
        }
        String said = printed.toString(StandardCharsets.UTF_8);
        if (KvmDevice.available()) {
            assertThat(said).isEmpty();
        } else {
            assertThat(said).isEqualTo("no guests here: " + KvmDevice.unavailableReason().orElseThrow() + "\n");
        }
    }
}
