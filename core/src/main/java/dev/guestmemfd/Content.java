package dev.guestmemfd;

/** What a conversion does with the contents of the converted pages. */
public enum Content {
    /** The pages read as zero afterwards: nothing crosses from one side to the other. */
    ZERO,
    /** The pages keep their bytes: the side that gave them up meant to hand them over. */
    PRESERVE
}
