package dev.guestmemfd.testing;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.SplittableRandom;
import java.util.concurrent.ThreadLocalRandom;
import java.util.function.Function;

/**
 * A property over random sequences of operations: run it for many sequences, each drawn
 * from its own seed; on the first failure, shrink the sequence to a smaller one that still
 * fails the same way, and fail with both sequences and the seed that replays the case.
 *
 * <p>Each try draws its set-up and then its operations from a {@link SplittableRandom}
 * seeded with its own try seed ({@link #trySeed}); try 0's seed is the base seed, so
 * {@code -Dgmem.seed=s -Dgmem.tries=1} replays exactly the try whose seed is {@code s}. The base seed comes from {@link #seed(long)}, else the system property
 * {@value #SEED_PROPERTY}, else is chosen at random; it is printed before the first try, so a
 * CI log always allows the run to be repeated. {@value #TRIES_PROPERTY} overrides the number
 * of tries (unless the seed is fixed in code).
 *
 * <p>Shrinking is deterministic too: it deletes chunks of operations (halves, quarters, ...,
 * single operations) while the property still fails with the same kind of throwable, then
 * replaces single operations by the simpler ones the test's function offers, and repeats
 * until nothing changes or a budget of runs is spent.
 *
 * @param <S> the set-up a sequence runs in (kept as drawn while shrinking)
 * @param <T> the operations
 */
public final class SequenceProperty<S, T> {
    /** The system property with a base seed to run from. */
    public static final String SEED_PROPERTY = "gmem.seed";
    /** The system property with a number of tries that overrides the test's own. */
    public static final String TRIES_PROPERTY = "gmem.tries";

    /** The property itself: throws (an assertion error, usually) when it does not hold. */
    @FunctionalInterface
    public interface Check<S, T> {
        /** Runs the operations, in order, in a fresh set-up. */
        void run(S setup, List<T> operations) throws Exception;
    }

    private final String name;
    private final Gen<S> setup;
    private final Gen<List<T>> operations;
    private int tries = 100;
    private Long seed;
    private int shrinkBudget = 2_000;
    private Function<? super T, ? extends List<? extends T>> simpler = op -> List.of();

    private SequenceProperty(String name, Gen<S> setup, Gen<List<T>> operations) {
        this.name = Objects.requireNonNull(name);
        this.setup = Objects.requireNonNull(setup);
        this.operations = Objects.requireNonNull(operations);
    }

    /**
     * {@return a property named {@code name} (the test class, so the failure message can say
     * how to re-run it) over sequences of {@code minLength} to {@code maxLength} operations}
     */
    public static <S, T> SequenceProperty<S, T> of(String name, Gen<S> setup, Gen<T> operation,
                                                   int minLength, int maxLength) {
        return new SequenceProperty<>(name, setup, operation.list(minLength, maxLength));
    }

    /** {@return this property, to run {@code count} sequences unless {@value #TRIES_PROPERTY} says otherwise} */
    public SequenceProperty<S, T> tries(int count) {
        if (count <= 0) {
            throw new IllegalArgumentException("tries " + count);
        }
        this.tries = count;
        return this;
    }

    /**
     * {@return this property, to run from {@code base} and for its own number of tries,
     * whatever {@value #SEED_PROPERTY} and {@value #TRIES_PROPERTY} say}
     */
    public SequenceProperty<S, T> seed(long base) {
        this.seed = base;
        return this;
    }

    /** {@return this property, to spend at most {@code runs} runs of the property on shrinking} */
    public SequenceProperty<S, T> shrinkBudget(int runs) {
        this.shrinkBudget = runs;
        return this;
    }

    /**
     * {@return this property, shrinking single operations to those {@code simplerOf} gives}
     * They are tried in order, so the simplest come first; an operation equal to the one
     * replaced is skipped, so a function may return it without looping.
     */
    public SequenceProperty<S, T> simplerOperations(Function<? super T, ? extends List<? extends T>> simplerOf) {
        this.simpler = Objects.requireNonNull(simplerOf);
        return this;
    }

    /**
     * {@return the seed of try {@code index} of a run from {@code base}} Try 0's is the base
     * itself; the others are the values a {@link SplittableRandom} seeded with the base draws.
     * (Seeds {@code base + index * gamma} would not do: SplittableRandom adds that very gamma
     * per value, so each try would draw the previous try's values shifted by one.)
     */
    public static long trySeed(long base, int index) {
        SplittableRandom seeds = new SplittableRandom(base);
        long seed = base;
        for (int i = 0; i < index; i++) {
            seed = seeds.nextLong();
        }
        return seed;
    }

    /** {@return the set-up and operations that the try with seed {@code trySeed} draws} */
    public Case<S, T> draw(long trySeed) {
        SplittableRandom random = new SplittableRandom(trySeed);
        S s = setup.next(random);
        return new Case<>(s, operations.next(random));
    }

    /**
     * Runs the property for every try, in order.
     *
     * @throws Falsified on the first try that fails, after shrinking it
     */
    public void check(Check<S, T> property) {
        // A seed fixed in code makes a fixed run: the harness's own tests must not follow -Dgmem.tries.
        long base = seed != null ? seed : configuredSeed();
        int count = seed != null ? tries : Integer.getInteger(TRIES_PROPERTY, tries);
        System.out.printf("%s: %d sequence%s from seed %d (re-run with -D%s=%d)%n",
                name, count, count == 1 ? "" : "s", base, SEED_PROPERTY, base);
        SplittableRandom seeds = new SplittableRandom(base);
        long trySeed = base;
        for (int i = 0; i < count; i++, trySeed = seeds.nextLong()) {
            Case<S, T> drawn = draw(trySeed);
            Throwable failure = failure(property, drawn.setup(), drawn.operations());
            if (failure != null) {
                throw shrink(property, base, i, trySeed, drawn, failure);
            }
        }
    }

    private static long configuredSeed() {
        String configured = System.getProperty(SEED_PROPERTY);
        if (configured == null || configured.isBlank()) {
            return ThreadLocalRandom.current().nextLong();  // the only choice not made by a seed
        }
        return Long.decode(configured.strip());
    }

    private static <S, T> Throwable failure(Check<S, T> property, S setup, List<T> operations) {
        try {
            property.run(setup, List.copyOf(operations));
            return null;
        } catch (Exception | AssertionError e) {
            return e;
        }
    }

    private Falsified shrink(Check<S, T> property, long base, int index, long trySeed, Case<S, T> drawn,
                             Throwable first) {
        Shrinker shrinker = new Shrinker(property, drawn.setup(), first.getClass());
        List<T> smallest = shrinker.shrink(drawn.operations(), first);
        String module = Path.of(System.getProperty("user.dir")).getFileName().toString();
        StringBuilder message = new StringBuilder()
                .append(name).append(" failed at try ").append(index + 1)
                .append(" (base seed ").append(base).append(", try seed ").append(trySeed).append(")\n")
                .append("set-up: ").append(drawn.setup()).append('\n')
                .append("original sequence, ").append(describe(drawn.operations()))
                .append("shrunk sequence (").append(shrinker.steps).append(" steps in ").append(shrinker.runs)
                .append(" runs), ").append(describe(smallest))
                .append("fails with: ").append(shrinker.failure).append('\n')
                .append("re-run exactly this case: -Dgmem.seed=").append(trySeed).append(" -Dgmem.tries=1")
                .append(", e.g. mvn -B -ntp -pl ").append(module).append(" -am verify -Dtest=").append(name)
                .append(" -Dsurefire.failIfNoSpecifiedTests=false -D").append(SEED_PROPERTY).append('=').append(trySeed)
                .append(" -D").append(TRIES_PROPERTY).append("=1");
        return new Falsified(message.toString(), shrinker.failure, drawn, smallest, base, index);
    }

    private static String describe(List<?> operations) {
        StringBuilder text = new StringBuilder().append(operations.size()).append(" operations:\n");
        for (int i = 0; i < operations.size(); i++) {
            text.append(String.format("  %3d. %s%n", i + 1, operations.get(i)));
        }
        return text.toString();
    }

    /** One failing sequence made smaller, run by run; keeps the last failure it saw. */
    private final class Shrinker {
        final Check<S, T> property;
        final S setup;
        final Class<?> kind;
        Throwable failure;
        int runs;
        int steps;

        Shrinker(Check<S, T> property, S setup, Class<?> kind) {
            this.property = property;
            this.setup = setup;
            this.kind = kind;
        }

        List<T> shrink(List<T> operations, Throwable first) {
            failure = first;
            List<T> current = operations;
            boolean progress = true;
            while (progress && runs < shrinkBudget) {
                List<T> fewer = deleteChunks(current);
                List<T> simpler = simplifyEach(fewer);
                progress = simpler != current;
                current = simpler;
            }
            return current;
        }

        /** Deletes runs of operations, the longest first, wherever the rest still fails. */
        List<T> deleteChunks(List<T> current) {
            for (int chunk = Math.max(1, current.size() / 2); chunk >= 1; chunk /= 2) {
                for (int from = 0; from + chunk <= current.size() && runs < shrinkBudget; ) {
                    List<T> candidate = new ArrayList<>(current.subList(0, from));
                    candidate.addAll(current.subList(from + chunk, current.size()));
                    if (stillFails(candidate)) {
                        current = candidate;
                    } else {
                        from += chunk;
                    }
                }
            }
            return current;
        }

        /** Replaces each operation by the first simpler one that still fails, until none does. */
        List<T> simplifyEach(List<T> current) {
            for (int i = 0; i < current.size(); i++) {
                boolean replaced = true;
                while (replaced && runs < shrinkBudget) {
                    replaced = false;
                    T op = current.get(i);
                    for (T candidateOp : simpler.apply(op)) {
                        if (candidateOp.equals(op) || runs >= shrinkBudget) {
                            continue;
                        }
                        List<T> candidate = new ArrayList<>(current);
                        candidate.set(i, candidateOp);
                        if (stillFails(candidate)) {
                            current = candidate;
                            replaced = true;
                            break;
                        }
                    }
                }
            }
            return current;
        }

        boolean stillFails(List<T> candidate) {
            runs++;
            Throwable t = failure(property, setup, candidate);
            if (t != null && t.getClass() == kind) {
                failure = t;
                steps++;
                return true;
            }
            return false;
        }
    }

    /**
     * The set-up and operations of one try.
     *
     * @param setup what the sequence runs in
     * @param operations the sequence
     * @param <S> the set-up
     * @param <T> the operations
     */
    public record Case<S, T>(S setup, List<T> operations) {
    }

    /** A property that does not hold: the message says for which seed, before and after shrinking. */
    public static final class Falsified extends AssertionError {
        private static final long serialVersionUID = 1L;
        private final transient Case<?, ?> original;
        private final transient List<?> shrunk;
        private final long baseSeed;
        private final int tryIndex;

        Falsified(String message, Throwable cause, Case<?, ?> original, List<?> shrunk, long baseSeed, int tryIndex) {
            super(message, cause);
            this.original = original;
            this.shrunk = List.copyOf(shrunk);
            this.baseSeed = baseSeed;
            this.tryIndex = tryIndex;
        }

        /** {@return the try as drawn} */
        public Case<?, ?> original() {
            return original;
        }

        /** {@return the smallest failing sequence shrinking found} */
        public List<?> shrunk() {
            return shrunk;
        }

        /** {@return the seed of the run} */
        public long baseSeed() {
            return baseSeed;
        }

        /** {@return the index (from 0) of the failing try} */
        public int tryIndex() {
            return tryIndex;
        }
    }
}
