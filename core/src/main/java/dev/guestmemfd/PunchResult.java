package dev.guestmemfd;

/**
 * What a punch did to the memory of its range ({@link GuestMemory#punch}). Both parts read
 * as zero afterwards; they differ in what the system gets back.
 *
 * @param freed  bytes of whole blocks punched: their memory, where they held any, went back
 *               to the system (or, on the hugetlb backings, to the pool)
 * @param zeroed bytes zeroed in place, their memory kept: the pieces of a huge page that the
 *               range covers only in part, and every byte on a backing that cannot free part
 *               of a file ({@link Backing#SECRET})
 */
public record PunchResult(long freed, long zeroed) {
}
