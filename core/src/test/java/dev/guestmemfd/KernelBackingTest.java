package dev.guestmemfd;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.BeforeAll;

class KernelBackingTest extends GuestMemoryContract {
    @BeforeAll
    static void needsKvm() {
        assumeTrue(Files.isReadable(Path.of("/dev/kvm")) && Files.isWritable(Path.of("/dev/kvm")),
                "the KERNEL backing needs /dev/kvm, which this host lacks");
    }

    @Override
    Backing backing() {
        return Backing.KERNEL;
    }
}
