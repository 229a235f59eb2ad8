package dev.guestmemfd.kvm;

import dev.guestmemfd.linux.LinuxException;

/** A KVM call failed: names the errno, the call and what it was for. */
public final class KvmException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final String errno;

    KvmException(String what, LinuxException cause) {
        super(what + ": " + cause.errnoName() + " (" + cause.call() + ")", cause);
        this.errno = cause.errnoName();
    }

    KvmException(String what, String errno, String reason) {
        super(what + ": " + errno + ": " + reason);
        this.errno = errno;
    }

    /** {@return the errno name, e.g. {@code EEXIST}} */
    public String errno() {
        return errno;
    }
}
