package dev.guestmemfd.kvm;

import dev.guestmemfd.Errno;
import dev.guestmemfd.linux.LinuxException;

/** A KVM call failed: names the errno, the call and what it was for. */
public final class KvmException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final Errno errno;

    KvmException(String what, LinuxException cause) {
        // The binding layer's exception type is not exported: its errno and call travel, not the object.
        super(what + ": " + cause.errnoName() + " (" + cause.call() + ")");
        this.errno = Errno.of(cause.errno());
    }

    KvmException(String what, Errno errno, String reason) {
        super(what + ": " + errno.name() + ": " + reason);
        this.errno = errno;
    }

    /** {@return the errno, e.g. {@link Errno#EEXIST}: the same type as the core's refusals carry} */
    public Errno errno() {
        return errno;
    }
}
