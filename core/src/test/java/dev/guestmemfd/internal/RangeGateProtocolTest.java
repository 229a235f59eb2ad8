package dev.guestmemfd.internal;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

/**
 * Every interleaving of the announce/wait protocol of {@link RangeGate}, checked state by
 * state: an explicit-state model of its steps (each an atomic, sequentially consistent
 * action: a volatile read or write, an atomic add, a lock or condition operation), explored
 * breadth-first over all schedules of two accessors and one converter over common pages.
 *
 * <p>Checked in every reachable state: no accessor is inside its access while the converter
 * is inside its revocation (mutual exclusion); and every state with no step left is the end
 * of every thread (no lost wake-up, no deadlock). The converter's wait has no deadline here:
 * a deadline would hide a lost wake-up. The model's steps follow the code line by line; the
 * mutants below show the checker finds the bugs such protocols are prone to.
 */
class RangeGateProtocolTest {
    // State layout: program counters and wait states of the three threads, then shared variables.
    static final int ACCESSORS = 2;
    static final int CONVERTER = ACCESSORS;
    static final int THREADS = ACCESSORS + 1;
    static final int PC = 0;                      // [0, THREADS)
    static final int WAIT = THREADS;              // [THREADS, 2 * THREADS): 0 running, 1 on quiet, 2 on unblocked, 3 woken
    static final int LEFT = 2 * THREADS;          // [2T, 2T + ACCESSORS): accesses left per accessor
    static final int IN_FLIGHT = LEFT + ACCESSORS;
    static final int BLOCKED = IN_FLIGHT + 1;
    static final int SLEEPING = BLOCKED + 1;
    static final int OWNER = SLEEPING + 1;        // lock owner + 1, 0 when free
    static final int SIZE = OWNER + 1;

    static final int DONE = 99;
    static final int IN_ACCESS = 5;
    static final int IN_REVOCATION = 10;
    static final int RUNNING = 0;
    static final int ON_QUIET = 1;
    static final int ON_UNBLOCKED = 2;
    static final int WOKEN = 3;

    /** Deliberate bugs, to show that the checker finds them. */
    enum Mutant {
        NONE,
        /** The accessor reads the blocked range before it announces itself. */
        READ_BLOCK_BEFORE_ANNOUNCING,
        /** The converter goes to sleep on the count it read before it registered as sleeping. */
        SLEEP_WITHOUT_RECOUNT,
        /** A leaving accessor does not wake the sleeping converter. */
        NO_WAKE_ON_EXIT
    }

    record Result(int states, List<String> violations) {
    }

    static Result explore(Mutant mutant, int accessesEach) {
        int[] initial = new int[SIZE];
        for (int a = 0; a < ACCESSORS; a++) {
            initial[LEFT + a] = accessesEach;
        }
        Set<List<Integer>> seen = new HashSet<>();
        ArrayDeque<int[]> frontier = new ArrayDeque<>();
        frontier.add(initial);
        seen.add(key(initial));
        List<String> violations = new ArrayList<>();
        while (!frontier.isEmpty() && violations.size() < 5) {
            int[] s = frontier.poll();
            boolean anyAccessing = false;
            for (int a = 0; a < ACCESSORS; a++) {
                anyAccessing |= s[PC + a] == IN_ACCESS;
            }
            if (anyAccessing && s[PC + CONVERTER] == IN_REVOCATION) {
                violations.add("an access and the revocation at once: " + Arrays.toString(s));
            }
            boolean moved = false;
            for (int t = 0; t < THREADS; t++) {
                int[] next = step(s, t, mutant);
                if (next != null) {
                    moved = true;
                    if (seen.add(key(next))) {
                        frontier.add(next);
                    }
                }
            }
            if (!moved) {
                for (int t = 0; t < THREADS; t++) {
                    if (s[PC + t] != DONE) {
                        violations.add("stuck for ever (thread " + t + " at " + s[PC + t] + ", wait " + s[WAIT + t] + "): "
                                + Arrays.toString(s));
                        break;
                    }
                }
            }
        }
        return new Result(seen.size(), violations);
    }

    /** {@return the state after one step of thread {@code t}, or null when it cannot step} */
    static int[] step(int[] s, int t, Mutant mutant) {
        if (s[PC + t] == DONE || s[WAIT + t] == ON_QUIET || s[WAIT + t] == ON_UNBLOCKED) {
            return null;
        }
        int[] n = s.clone();
        if (s[WAIT + t] == WOKEN) {  // woken from a condition: takes the lock back first
            if (s[OWNER] != 0) {
                return null;
            }
            n[OWNER] = t + 1;
            n[WAIT + t] = RUNNING;
            return n;
        }
        return t == CONVERTER ? converter(s, n, mutant) : accessor(s, n, t, mutant);
    }

    static int[] accessor(int[] s, int[] n, int t, Mutant mutant) {
        int pc = s[PC + t];
        boolean early = mutant == Mutant.READ_BLOCK_BEFORE_ANNOUNCING;
        switch (pc) {
            // enter(): announce, then read the block (the mutant reads first, then announces)
            case 0 -> {
                if (early) {
                    n[PC + t] = s[BLOCKED] == 1 ? 4 : 1;
                } else {
                    n[IN_FLIGHT]++;
                    n[PC + t] = 1;
                }
            }
            case 1 -> {
                if (early) {
                    n[IN_FLIGHT]++;
                    n[PC + t] = IN_ACCESS;
                } else {
                    n[PC + t] = s[BLOCKED] == 1 ? 2 : IN_ACCESS;
                }
            }
            case 2 -> { // step back
                n[IN_FLIGHT]--;
                n[PC + t] = 3;
            }
            case 3 -> n[PC + t] = s[SLEEPING] != 0 ? 30 : 4;  // wakeConverters()
            case 30 -> {
                if (!lock(s, n, t)) {
                    return null;
                }
                n[PC + t] = 31;
            }
            case 31 -> {
                signalAll(n, ON_QUIET);
                n[PC + t] = 32;
            }
            case 32 -> {
                n[OWNER] = 0;
                n[PC + t] = 4;
            }
            case 4 -> { // awaitUnblocked()
                if (!lock(s, n, t)) {
                    return null;
                }
                n[PC + t] = 40;
            }
            case 40 -> {
                if (s[BLOCKED] == 1) {
                    await(n, t, ON_UNBLOCKED);
                } else {
                    n[PC + t] = 41;
                }
            }
            case 41 -> {
                n[OWNER] = 0;
                n[PC + t] = 0;
            }
            case IN_ACCESS -> n[PC + t] = 6;
            case 6 -> { // exit()
                n[IN_FLIGHT]--;
                n[PC + t] = 7;
            }
            case 7 -> n[PC + t] = s[SLEEPING] != 0 && mutant != Mutant.NO_WAKE_ON_EXIT ? 70 : 9;
            case 70 -> {
                if (!lock(s, n, t)) {
                    return null;
                }
                n[PC + t] = 71;
            }
            case 71 -> {
                signalAll(n, ON_QUIET);
                n[PC + t] = 72;
            }
            case 72 -> {
                n[OWNER] = 0;
                n[PC + t] = 9;
            }
            case 9 -> {
                n[LEFT + t]--;
                n[PC + t] = n[LEFT + t] > 0 ? 0 : DONE;
            }
            default -> throw new AssertionError("accessor pc " + pc);
        }
        return n;
    }

    static int[] converter(int[] s, int[] n, Mutant mutant) {
        int t = CONVERTER;
        int pc = s[PC + t];
        switch (pc) {
            // block()
            case 0 -> {
                if (!lock(s, n, t)) {
                    return null;
                }
                n[PC + t] = 1;
            }
            case 1 -> {
                n[BLOCKED] = 1;
                n[PC + t] = 2;
            }
            case 2 -> {
                n[OWNER] = 0;
                n[PC + t] = 3;
            }
            // awaitQuiet(): the lock-free first count
            case 3 -> n[PC + t] = s[IN_FLIGHT] == 0 ? IN_REVOCATION : 4;
            case 4 -> {
                if (!lock(s, n, t)) {
                    return null;
                }
                n[PC + t] = mutant == Mutant.SLEEP_WITHOUT_RECOUNT ? 50 : 5;
            }
            case 5 -> {
                n[SLEEPING]++;
                n[PC + t] = 6;
            }
            case 6 -> {
                if (s[IN_FLIGHT] == 0) {
                    n[PC + t] = 7;
                } else {
                    await(n, t, ON_QUIET);
                }
            }
            // the mutant: sleeps on the first count, registering only then
            case 50 -> {
                n[SLEEPING]++;
                n[PC + t] = 51;
            }
            case 51 -> {
                await(n, t, ON_QUIET);
                n[PC + t] = 6;
            }
            case 7 -> {
                n[SLEEPING]--;
                n[PC + t] = 8;
            }
            case 8 -> {
                n[OWNER] = 0;
                n[PC + t] = IN_REVOCATION;
            }
            case IN_REVOCATION -> n[PC + t] = 11;
            // unblock()
            case 11 -> {
                if (!lock(s, n, t)) {
                    return null;
                }
                n[PC + t] = 12;
            }
            case 12 -> {
                n[BLOCKED] = 0;
                signalAll(n, ON_UNBLOCKED);
                n[PC + t] = 13;
            }
            case 13 -> {
                n[OWNER] = 0;
                n[PC + t] = DONE;
            }
            default -> throw new AssertionError("converter pc " + pc);
        }
        return n;
    }

    static boolean lock(int[] s, int[] n, int t) {
        if (s[OWNER] != 0) {
            return false;
        }
        n[OWNER] = t + 1;
        return true;
    }

    /** Condition.await: releases the lock and sleeps, in one step; the thread resumes at the same pc. */
    static void await(int[] n, int t, int condition) {
        n[OWNER] = 0;
        n[WAIT + t] = condition;
    }

    static void signalAll(int[] n, int condition) {
        for (int t = 0; t < THREADS; t++) {
            if (n[WAIT + t] == condition) {
                n[WAIT + t] = WOKEN;
            }
        }
    }

    static List<Integer> key(int[] s) {
        List<Integer> k = new ArrayList<>(s.length);
        for (int v : s) {
            k.add(v);
        }
        return k;
    }

    @Test
    void everyInterleavingKeepsAccessesAndTheRevocationApartAndEnds() {
        for (int accesses = 1; accesses <= 3; accesses++) {
            Result r = explore(Mutant.NONE, accesses);
            assertThat(r.violations()).as("violations with %d accesses each", accesses).isEmpty();
            assertThat(r.states()).as("states explored").isGreaterThan(100);
            System.out.printf("RangeGate model, two accessors x %d accesses, one converter: %d states, no violation%n",
                    accesses, r.states());
        }
    }

    @Test
    void theCheckerFindsAnAccessorThatReadsTheBlockBeforeAnnouncing() {
        assertThat(explore(Mutant.READ_BLOCK_BEFORE_ANNOUNCING, 1).violations())
                .anySatisfy(v -> assertThat(v).startsWith("an access and the revocation at once"));
    }

    @Test
    void theCheckerFindsALostWakeUp() {
        assertThat(explore(Mutant.SLEEP_WITHOUT_RECOUNT, 1).violations()).anySatisfy(v -> assertThat(v).startsWith("stuck"));
        assertThat(explore(Mutant.NO_WAKE_ON_EXIT, 1).violations()).anySatisfy(v -> assertThat(v).startsWith("stuck"));
    }
}
