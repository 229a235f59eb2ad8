package dev.guestmemfd.testing;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The property harness on toy properties whose smallest counterexample is known. */
class SequencePropertyTest {
    /** Fails once a value of at least 10 is followed, anywhere later, by one of at least 3. */
    static void noTenThenThree(String setup, List<Integer> ops) {
        boolean big = false;
        for (int v : ops) {
            if (big && v >= 3) {
                throw new AssertionError("three after ten in " + ops);
            }
            big |= v >= 10;
        }
    }

    static SequenceProperty<String, Integer> toy() {
        return SequenceProperty.of("SequencePropertyTest", Gen.elements("a", "b"), Gen.ints(0, 1000), 0, 40)
                .tries(500)
                .simplerOperations(v -> Shrink.towards(v, 0));
    }

    @Test
    void shrinksToTheSmallestFailingSequence() {
        var failed = catchThrowableOfType(SequenceProperty.Falsified.class,
                () -> toy().seed(42).check(SequencePropertyTest::noTenThenThree));
        assertThat(failed.original().operations().size()).isGreaterThan(2);
        assertThat(failed.shrunk()).isEqualTo(List.of(10, 3));
        assertThat(failed.getMessage())
                .contains("base seed 42", "try seed " + SequenceProperty.trySeed(42, failed.tryIndex()))
                .contains("-Dgmem.seed=" + SequenceProperty.trySeed(42, failed.tryIndex()) + " -Dgmem.tries=1")
                .contains("shrunk sequence (", "2 operations:\n    1. 10\n    2. 3\n");
        assertThat(failed.getCause()).hasMessage("three after ten in [10, 3]");
    }

    @Test
    void theTrySeedReplaysTheFailingTryAsTryOne() {
        var failed = catchThrowableOfType(SequenceProperty.Falsified.class,
                () -> toy().seed(7).check(SequencePropertyTest::noTenThenThree));
        long trySeed = SequenceProperty.trySeed(7, failed.tryIndex());
        var replayed = catchThrowableOfType(SequenceProperty.Falsified.class,
                () -> toy().seed(trySeed).tries(1).check(SequencePropertyTest::noTenThenThree));
        assertThat(replayed.tryIndex()).isZero();
        assertThat(replayed.original()).isEqualTo(failed.original());
        assertThat(replayed.shrunk()).isEqualTo(failed.shrunk());
    }

    @Test
    void theSameSeedDrawsTheSameSequences() {
        List<Object> first = new ArrayList<>();
        List<Object> second = new ArrayList<>();
        List<Object> other = new ArrayList<>();
        toy().seed(1234).tries(50).check((s, ops) -> first.add(s + ops));
        toy().seed(1234).tries(50).check((s, ops) -> second.add(s + ops));
        toy().seed(1235).tries(50).check((s, ops) -> other.add(s + ops));
        assertThat(first).hasSize(50).isEqualTo(second).isNotEqualTo(other);
    }

    @Test
    void triesDrawIndependentSequences() {
        // Seeds one gamma apart would make try i+1 draw try i's values shifted by one.
        var property = SequenceProperty.of("SequencePropertyTest", Gen.constant(""), Gen.ints(0, 1_000_000), 5, 5);
        int shifted = 0;
        for (int i = 0; i < 200; i++) {
            List<Integer> now = property.draw(SequenceProperty.trySeed(5, i)).operations();
            List<Integer> next = property.draw(SequenceProperty.trySeed(5, i + 1)).operations();
            shifted += now.subList(1, 5).equals(next.subList(0, 4)) ? 1 : 0;
        }
        assertThat(shifted).isZero();
    }

    @Test
    void aSmallerSequenceThatFailsOtherwiseIsNotTaken() {
        // Sequences of three or more that sum to 1000 fail the property; shorter ones with a
        // big value throw something else, which must not pass for the same failure.
        var failed = catchThrowableOfType(SequenceProperty.Falsified.class,
                () -> SequenceProperty.of("SequencePropertyTest", Gen.constant(""), Gen.ints(0, 1000), 3, 20)
                        .seed(99)
                        .simplerOperations(v -> Shrink.towards(v, 0))
                        .check((s, ops) -> {
                            if (ops.size() < 3 && ops.stream().anyMatch(v -> v >= 500)) {
                                throw new IllegalStateException("short and big: " + ops);
                            }
                            if (ops.stream().mapToInt(Integer::intValue).sum() >= 1000) {
                                throw new AssertionError("sum of " + ops);
                            }
                        }));
        assertThat(failed.getCause()).isInstanceOf(AssertionError.class);
        assertThat(failed.shrunk()).hasSize(3);
        assertThat(failed.shrunk().stream().mapToInt(v -> (Integer) v).sum()).isEqualTo(1000);
    }

    @Test
    void shrinkingTowardsATargetKeepsToTheGrid() {
        assertThat(Shrink.towards(10 * 4096L, 0, 4096)).containsExactly(0L, 5 * 4096L, 8 * 4096L, 9 * 4096L);
        assertThat(Shrink.towards(4096L + 7, 0, 4096)).containsExactly(0L, 4096L);
        assertThat(Shrink.towards(-4096L, 0, 4096)).containsExactly(0L);
        assertThat(Shrink.towards(1L, 0, 4096)).containsExactly(0L);
        assertThat(Shrink.towards(3, 3)).isEmpty();
    }
}
