package dev.guestmemfd.testing;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.function.Function;
import java.util.random.RandomGenerator;

/**
 * A generator of random values of one kind. A generator draws only from the random
 * generator it is given, so the same seed gives the same values, on every host and run.
 *
 * @param <T> the kind of value drawn
 */
@FunctionalInterface
public interface Gen<T> {
    /** {@return the next value, drawn from {@code random} only} */
    T next(RandomGenerator random);

    /** {@return a generator of {@code f} applied to this generator's values} */
    default <R> Gen<R> map(Function<? super T, ? extends R> f) {
        return random -> f.apply(next(random));
    }

    /** {@return a generator of lists of this generator's values, of a length in {@code [min, max]}} */
    default Gen<List<T>> list(int min, int max) {
        if (min < 0 || max < min) {
            throw new IllegalArgumentException("list length " + min + ".." + max);
        }
        return random -> {
            int length = random.nextInt(min, max + 1);
            List<T> values = new ArrayList<>(length);
            for (int i = 0; i < length; i++) {
                values.add(next(random));
            }
            return values;
        };
    }

    /** {@return a generator that always gives {@code value}} */
    static <T> Gen<T> constant(T value) {
        return random -> value;
    }

    /** {@return a generator of ints in {@code [min, max]}, both included} */
    static Gen<Integer> ints(int min, int max) {
        if (max < min) {
            throw new IllegalArgumentException("ints " + min + ".." + max);
        }
        return random -> (int) random.nextLong(min, (long) max + 1);
    }

    /** {@return a generator of longs in {@code [min, max]}, both included; {@code max} below {@code Long.MAX_VALUE}} */
    static Gen<Long> longs(long min, long max) {
        if (max < min || max == Long.MAX_VALUE) {
            throw new IllegalArgumentException("longs " + min + ".." + max);
        }
        return random -> random.nextLong(min, max + 1);
    }

    /** {@return a generator of true and false, equally likely} */
    static Gen<Boolean> booleans() {
        return RandomGenerator::nextBoolean;
    }

    /** {@return a generator of any byte} */
    static Gen<Byte> bytes() {
        return random -> (byte) random.nextInt(256);
    }

    /** {@return a generator of one of {@code values}, each equally likely} */
    @SafeVarargs
    static <T> Gen<T> elements(T... values) {
        List<T> list = new ArrayList<>();
        for (T value : values) {  // a loop, not List.of(values): the array must not leave this method
            list.add(value);
        }
        return elements(list);
    }

    /** {@return a generator of one of {@code values}, each equally likely} */
    static <T> Gen<T> elements(List<? extends T> values) {
        if (values.isEmpty()) {
            throw new IllegalArgumentException("nothing to choose from");
        }
        List<? extends T> copy = List.copyOf(values);
        return random -> copy.get(random.nextInt(copy.size()));
    }

    /** {@return a generator of the values of one of {@code gens}, each equally likely} */
    @SafeVarargs
    static <T> Gen<T> oneOf(Gen<? extends T>... gens) {
        List<Gen<? extends T>> list = new ArrayList<>();
        for (Gen<? extends T> gen : gens) {
            list.add(gen);
        }
        Gen<Gen<? extends T>> which = elements(list);
        return random -> which.next(random).next(random);
    }

    /** {@return {@code gen} with a weight, for {@link #frequency}} */
    static <T> Weighted<T> weighted(int weight, Gen<? extends T> gen) {
        return new Weighted<>(weight, gen);
    }

    /** {@return a generator that draws from each of {@code choices} as often as its weight says} */
    @SafeVarargs
    static <T> Gen<T> frequency(Weighted<? extends T>... choices) {
        List<Weighted<? extends T>> list = new ArrayList<>();
        for (Weighted<? extends T> choice : choices) {
            list.add(choice);
        }
        int total = list.stream().mapToInt(Weighted::weight).sum();
        if (total <= 0) {
            throw new IllegalArgumentException("no weight to choose by");
        }
        return random -> {
            int pick = random.nextInt(total);
            for (Weighted<? extends T> choice : list) {
                pick -= choice.weight();
                if (pick < 0) {
                    return choice.gen().next(random);
                }
            }
            throw new AssertionError("unreachable: weights sum to " + total);
        };
    }

    /**
     * A generator and how often {@link #frequency} draws from it, relative to the others.
     *
     * @param weight a positive share
     * @param gen the generator
     * @param <T> the kind of value drawn
     */
    record Weighted<T>(int weight, Gen<? extends T> gen) {
        public Weighted {
            if (weight <= 0) {
                throw new IllegalArgumentException("weight " + weight);
            }
            Objects.requireNonNull(gen);
        }
    }
}
