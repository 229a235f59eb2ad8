package dev.guestmemfd.kvm;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;

/**
 * The guest programs of this project: 64-bit code, assembled from {@code kvm/guests/*.S}
 * ({@code kvm/guests/build.sh}) and linked to run at {@link GuestLayout#CODE}.
 */
public enum GuestProgram {
    /** Prints a line on the serial port 0x3f8 and halts. */
    HELLO("hello"),
    /** The conversion scenario of the kernel's private_mem_conversions_test, per vCPU. */
    CONVERSIONS("conversions"),
    /** Writes every page of [RBX, RCX) and reports a checksum on port 0x511. */
    TOUCH_ALL("touch_all"),
    /** Asks for conversion of [RBX, RBX + RCX pages) to private with {@code KVM_HC_MAP_GPA_RANGE}. */
    HYPERCALL("hypercall"),
    /** The story of {@code gmem demo}: a private secret, a shared message, a refused host read. */
    DEMO("demo"),
    /** Counts for ever, printing each count: a guest whose progress shows across a migration. */
    COUNTER("counter");

    private final String file;

    GuestProgram(String file) {
        this.file = file;
    }

    /** {@return the source's base name under {@code kvm/guests}} */
    public String fileName() {
        return file;
    }

    /** {@return the program's bytes} */
    public byte[] bytes() {
        try (InputStream in = GuestProgram.class.getResourceAsStream("guests/" + file + ".bin")) {
            if (in == null) {
                throw new IllegalStateException("guest program " + file + ".bin is missing from the build");
            }
            return in.readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
