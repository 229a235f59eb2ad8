package dev.guestmemfd;

/**
 * Why an owner's mappings of a range are invalidated. Architectures tell them apart: a
 * punched page leaves the guest for good (pKVM allows that only at teardown), a converted
 * page changes hands, a failed page stays but may not be touched.
 */
public enum Invalidation {
    /** The pages are freed (a hole is punched): their contents are gone. */
    PUNCH,
    /** The pages change between shared and private. */
    CONVERSION,
    /**
     * A page failed (hardware poison, {@link GuestMemory#reportMemoryFailure}): it keeps its
     * memory, but its contents are lost and no access may reach it until it is punched.
     */
    MEMORY_FAILURE
}
