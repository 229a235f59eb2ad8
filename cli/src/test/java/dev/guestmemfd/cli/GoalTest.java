package dev.guestmemfd.cli;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** gmem bench marks a figure that misses its goal, and only such a figure. */
class GoalTest {
    @Test
    void anUpperBoundIsMetAtItAndMissedAboveIt() {
        Goal goal = Goal.atMost(1.05, "ratio <= 1.05");
        assertThat(goal.met(1.05)).isTrue();
        assertThat(goal.mark(1.05)).isEmpty();
        assertThat(goal.met(1.0501)).isFalse();
        assertThat(goal.mark(1.2)).contains(Goal.MISSED, "ratio <= 1.05");
    }

    @Test
    void aLowerBoundIsMetAtItAndMissedBelowIt() {
        Goal goal = Goal.atLeast(1_000_000, ">= 1,000,000 per second");
        assertThat(goal.met(1_000_000)).isTrue();
        assertThat(goal.mark(2_000_000)).isEmpty();
        assertThat(goal.met(999_999)).isFalse();
        assertThat(goal.mark(5)).startsWith("  " + Goal.MISSED).contains(">= 1,000,000");
    }

    @Test
    void notANumberMissesEveryGoal() {
        assertThat(Goal.atMost(1, "x").met(Double.NaN)).isFalse();
        assertThat(Goal.atLeast(1, "x").met(Double.NaN)).isFalse();
    }
}
