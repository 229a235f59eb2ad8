package dev.guestmemfd;

/**
 * The hypervisor side of a guest memory file: what KVM, Gunyah or a confidential-computing
 * firmware must do when the library changes pages under a {@link Binding}.
 *
 * <p>Every call is made with the file's lock held, in this order for a conversion to
 * private: {@code invalidateBegin}, host access revoked, {@code prepareInaccessible},
 * contents changed, {@code invalidateEnd}. A punch is bracketed by the invalidate pair
 * alone. Offsets are file offsets, always inside the binding's range.
 *
 * @implSpec Callbacks must not block on other threads that use the same file; they may call
 * back into the file from the same thread. The default methods accept everything.
 */
public interface Owner {
    /** The guest's mappings of {@code [offset, offset + length)} are about to change: drop them. */
    default void invalidateBegin(Binding binding, long offset, long length) {
    }

    /** The change announced by {@link #invalidateBegin} is complete (or was abandoned). */
    default void invalidateEnd(Binding binding, long offset, long length) {
    }

    /**
     * The pages are about to become private (host access is already revoked): hand them to the
     * guest, e.g. RMPUPDATE on SEV-SNP, accept on TDX, donate on pKVM.
     *
     * @throws OwnerRefusal when the architecture refuses; the whole conversion rolls back
     */
    default void prepareInaccessible(Binding binding, long offset, long length) throws OwnerRefusal {
    }

    /**
     * The pages are about to become shared: take them back from the guest.
     *
     * @throws OwnerRefusal when the architecture refuses; the whole conversion rolls back
     */
    default void prepareAccessible(Binding binding, long offset, long length) throws OwnerRefusal {
    }

    /** The binding ends (unbound, or the file closed): forget its pages. */
    default void release(Binding binding) {
    }
}
