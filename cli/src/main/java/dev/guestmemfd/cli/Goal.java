package dev.guestmemfd.cli;

import java.util.Locale;

/**
 * A figure's goal in {@code gmem bench}: a bound the figure must stay at or under, or at or
 * over. A row that misses it is marked, so a reader sees it without comparing numbers.
 *
 * @param atMost true for an upper bound, false for a lower one
 * @param bound  the bound, in the figure's unit
 * @param text   the goal as the table says it, e.g. {@code "ratio <= 1.05"}
 */
record Goal(boolean atMost, double bound, String text) {
    /** The marker of a row that misses its goal: visible without colour, and searchable. */
    static final String MISSED = "<< MISSES GOAL";

    static Goal atMost(double bound, String text) {
        return new Goal(true, bound, text);
    }

    static Goal atLeast(double bound, String text) {
        return new Goal(false, bound, text);
    }

    /** {@return true when {@code value} meets the goal} */
    boolean met(double value) {
        return atMost ? value <= bound : value >= bound;
    }

    /** {@return nothing when {@code value} meets the goal, else the marker and the goal} */
    String mark(double value) {
        return met(value) ? "" : String.format(Locale.ROOT, "  %s (%s)", MISSED, text);
    }
}
