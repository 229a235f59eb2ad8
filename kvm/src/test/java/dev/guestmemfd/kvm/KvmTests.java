package dev.guestmemfd.kvm;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Shared set-up of the tests that need {@code /dev/kvm}. */
final class KvmTests {
    private KvmTests() {
    }

    /** Skips the calling test, with the reason, where this host has no usable KVM. */
    static void requireKvm() {
        assumeTrue(Kvm.available(), "needs /dev/kvm (read and write), which this host lacks");
    }
}
