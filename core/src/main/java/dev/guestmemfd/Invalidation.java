package dev.guestmemfd;

/**
 * Why an owner's mappings of a range are invalidated. Architectures tell the two apart: a
 * punched page leaves the guest for good (pKVM allows that only at teardown), a converted
 * page changes hands.
 */
public enum Invalidation {
    /** The pages are freed (a hole is punched): their contents are gone. */
    PUNCH,
    /** The pages change between shared and private. */
    CONVERSION
}
