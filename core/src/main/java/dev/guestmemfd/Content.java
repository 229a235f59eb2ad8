package dev.guestmemfd;

/**
 * What a conversion guarantees about the contents of the converted pages: the content modes
 * of the kernel's {@code KVM_SET_MEMORY_ATTRIBUTES2} on a guest_memfd, by the same names.
 *
 * <p>A mode applies to the whole requested range, also to the pages that were already in the
 * target state. A mode an owner's architecture cannot give, or {@link #ZERO} towards private,
 * is refused with {@code EOPNOTSUPP} before anything changes.
 */
public enum Content {
    /**
     * No guarantee: the pages may keep their bytes, read as zero, or read as anything else.
     * Callers must not rely on what this library happens to do ({@code docs/SEMANTICS.md}).
     */
    UNSPECIFIED,
    /**
     * Every page of the range reads as zero afterwards, on every side that may read it.
     * Only towards shared: towards private the host cannot vouch for what the guest reads,
     * so the kernel refuses it, and so does this library ({@code EOPNOTSUPP}).
     */
    ZERO,
    /**
     * The pages keep their bytes as last written in the clear: the side that gave them up
     * meant to hand them over. Architectures that encrypt private memory give it only
     * towards private and only before the guest is finalized.
     */
    PRESERVE
}
