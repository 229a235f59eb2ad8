package dev.guestmemfd.migration;

import java.io.IOException;

/**
 * A migration channel ended or could not be opened; {@link #reason()} says why in the terms
 * of its threat model, the message says it in words. Whatever the reason, nothing that came
 * through the channel after the failure is to be trusted or kept.
 */
public final class ChannelException extends IOException {
    private static final long serialVersionUID = 1L;

    /** Why a channel failed. */
    public enum Reason {
        /** The other end proved an identity that is not the trusted peer, or refused ours. */
        WRONG_PEER,
        /** The other end offered only an older protocol than TLS 1.3, or refused TLS 1.3. */
        DOWNGRADE,
        /** A record did not authenticate: a byte was altered, or a recorded session was replayed. */
        TAMPERED,
        /** The other end said nothing for longer than the timeout. */
        TIMEOUT,
        /** The connection could not be made, or closed before the handshake or a message was complete. */
        BROKEN
    }

    private final Reason reason;

    /**
     * @param reason  why the channel failed
     * @param message what happened, in words, naming the other end where known
     * @param cause   the exception of the transport, or null
     */
    public ChannelException(Reason reason, String message, Throwable cause) {
        super(message, cause);
        this.reason = reason;
    }

    /** {@return why the channel failed} */
    public Reason reason() {
        return reason;
    }
}
