package dev.guestmemfd;

/**
 * The hypervisor side of a guest memory file: what KVM, Gunyah or a confidential-computing
 * firmware must do when the library changes pages under a {@link Binding}.
 *
 * <p>Every call is made with the file's lock held, in this order for a conversion to
 * private: {@code invalidateBegin}, host access revoked, {@code prepareInaccessible},
 * contents changed, {@code invalidateEnd}. A punch is bracketed by the invalidate pair
 * alone. When one owner refuses, the others that had accepted the same conversion are
 * told with {@code rollback}. Offsets are file offsets, always inside the binding's range.
 *
 * <p>The content mode is passed on because architectures differ in what survives a
 * conversion: on SEV-SNP and TDX a page's bytes cannot cross between host and guest in
 * place (memory encryption), on pKVM and Gunyah they can.
 *
 * @implSpec Callbacks must not block on other threads that use the same file; they may call
 * back into the file from the same thread, except for a call that would have to wait for the
 * operation that is calling the owner: a conversion or a pin of a range being converted, any
 * conversion from inside a conversion's callbacks, and {@link GuestMemory#close()}. Such a
 * call fails at once with {@code EDEADLK} (the operation cannot end before the callback
 * returns, so the call would wait on itself); the operation goes on if the owner catches it,
 * and ends with it otherwise. A callback that throws a {@link RuntimeException} ends the
 * operation as a refusal does (the other owners' preparations are rolled back), and the
 * exception reaches the caller as it is. Once released, an owner receives no further call.
 * The default methods accept everything.
 */
public interface Owner {
    /**
     * The owner has been given a range of the file: it can read the pages' attributes now and
     * set up its own state for them (an architecture's page table, a VMM's memslot).
     */
    default void bound(Binding binding) {
    }

    /** The guest's mappings of {@code [offset, offset + length)} are about to change: drop them. */
    default void invalidateBegin(Binding binding, long offset, long length, Invalidation why) {
    }

    /** The change announced by {@link #invalidateBegin} is complete (or was abandoned). */
    default void invalidateEnd(Binding binding, long offset, long length, Invalidation why) {
    }

    /**
     * {@return whether this owner's architecture can give the content mode to a conversion of
     * its pages towards {@code target}} Asked before anything changes, for every conversion
     * over the binding, also one that changes no page (a mode applies to the whole range); a
     * {@code false} refuses the conversion with {@code EOPNOTSUPP}, as the kernel refuses a
     * content mode the VM type cannot give. Never asked for {@link Content#UNSPECIFIED},
     * which every owner accepts, nor for {@link Content#ZERO} towards private, which the
     * library refuses itself. The default accepts every mode.
     */
    default boolean supportsContent(Binding binding, Attribute target, Content content) {
        return true;
    }

    /**
     * The pages are about to become private (host access is already revoked): hand them to the
     * guest, e.g. RMPUPDATE on SEV-SNP, TDH.MEM.PAGE.AUG on TDX, donate on pKVM.
     *
     * @param content what the conversion does with the pages' bytes
     * @throws OwnerRefusal when the architecture refuses; the whole conversion rolls back
     */
    default void prepareInaccessible(Binding binding, long offset, long length, Content content) throws OwnerRefusal {
    }

    /**
     * The pages are about to become shared: take them back from the guest.
     *
     * @param content what the conversion does with the pages' bytes
     * @throws OwnerRefusal when the architecture refuses; the whole conversion rolls back
     */
    default void prepareAccessible(Binding binding, long offset, long length, Content content) throws OwnerRefusal {
    }

    /**
     * Undoes a preparation this owner accepted, because another owner refused the same
     * conversion: the pages keep {@code attribute}, the one they had before.
     */
    default void rollback(Binding binding, long offset, long length, Attribute attribute) {
    }

    /**
     * Private pages were just filled by {@link Binding#populate}: measure or encrypt them into
     * the guest's launch state, e.g. SNP_LAUNCH_UPDATE, TDH.MEM.PAGE.ADD, RMI_DATA_CREATE.
     *
     * @throws OwnerRefusal when the architecture refuses (e.g. the guest already runs); the
     *                      populated pages are zeroed again
     */
    default void populate(Binding binding, long offset, long length) throws OwnerRefusal {
    }

    /** The binding ends (unbound, or the file closed): forget its pages. */
    default void release(Binding binding) {
    }
}
