package dev.guestmemfd;

import java.util.Arrays;

/**
 * The page records of a snapshot as an index holds them: where each one's body starts in the
 * stream, the file offset and length of its pages, its number in the stream (which its seal
 * or tag is bound to) and whether it is sealed. A record is named by the {@code int} that
 * {@link #add} returns. Not thread safe: its owner guards it.
 */
final class PageRecords {
    private long[] bodyAt = new long[64];
    private long[] offsets = new long[64];
    private int[] lengths = new int[64];
    private long[] numbers = new long[64];
    private boolean[] sealed = new boolean[64];
    private int count;

    /** {@return the new record's name} */
    int add(long body, long offset, int length, long number, boolean isSealed) {
        if (count == bodyAt.length) {
            int grown = count * 2;
            bodyAt = Arrays.copyOf(bodyAt, grown);
            offsets = Arrays.copyOf(offsets, grown);
            lengths = Arrays.copyOf(lengths, grown);
            numbers = Arrays.copyOf(numbers, grown);
            sealed = Arrays.copyOf(sealed, grown);
        }
        bodyAt[count] = body;
        offsets[count] = offset;
        lengths[count] = length;
        numbers[count] = number;
        sealed[count] = isSealed;
        return count++;
    }

    /** {@return where record {@code r}'s body starts in the stream} */
    long bodyAt(int r) {
        return bodyAt[r];
    }

    /** {@return the file offset of record {@code r}'s pages} */
    long offset(int r) {
        return offsets[r];
    }

    /** {@return the bytes of record {@code r}'s pages} */
    int length(int r) {
        return lengths[r];
    }

    /** {@return record {@code r}'s number in the stream} */
    long number(int r) {
        return numbers[r];
    }

    /** {@return true when record {@code r} is sealed (private pages)} */
    boolean sealed(int r) {
        return sealed[r];
    }
}
