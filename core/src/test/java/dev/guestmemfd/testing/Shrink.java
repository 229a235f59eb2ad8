package dev.guestmemfd.testing;

import java.util.ArrayList;
import java.util.List;

/** Simpler candidates for the numbers inside an operation, for a test's shrinking function. */
public final class Shrink {
    private Shrink() {
    }

    /**
     * {@return values between {@code target} and {@code value}, closest to {@code target}
     * first, never {@code value} itself} They are {@code target} plus whole multiples of
     * {@code step}: a page-aligned offset shrinks to page-aligned offsets. A value off that
     * grid also offers the grid point just before it, towards {@code target}.
     */
    public static List<Long> towards(long value, long target, long step) {
        if (step <= 0) {
            throw new IllegalArgumentException("step " + step);
        }
        long distance = Math.subtractExact(value, target);
        long units = distance / step;
        List<Long> candidates = new ArrayList<>();
        // target + units - i for i = units, units/2, units/4, ... 1: big jumps first, as QuickCheck does.
        for (long i = units; i != 0; i /= 2) {
            candidates.add(target + (units - i) * step);
        }
        if (distance % step != 0) {
            candidates.add(target + units * step);
        }
        return candidates;
    }

    /** {@return {@link #towards(long, long, long)} with a step of one, as ints} */
    public static List<Integer> towards(int value, int target) {
        return towards((long) value, target, 1).stream().map(Long::intValue).toList();
    }
}
