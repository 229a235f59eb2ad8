package dev.guestmemfd.models;

/** A guest-side operation of a model failed, as the architecture would fail it. */
public final class ArchitectureFault extends RuntimeException {
    private static final long serialVersionUID = 1L;

    ArchitectureFault(String message) {
        super(message);
    }
}
