package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.Timeout;

/**
 * The hostile kit, lifecycle part: the file, its mappings, bindings and pins are closed from
 * other threads, and from inside owner callbacks, while an operation on them blocks (a
 * conversion waiting for a pin, an owner callback in progress, a populate). Whatever the
 * interleaving, no operation may act on the file after {@code close()} returned (a file
 * created right after, which often gets the same fd number, keeps its bytes), none may hang,
 * and a call that would wait on itself is refused with {@code EDEADLK}.
 *
 * <p>Runs are seeded; the seed of each batch is printed, and {@code -Dgmem.hostile.seed=N}
 * repeats one.
 */
class HostileLifecycleTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long PAGES = 16;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
    static final byte MARK = (byte) 0xA5;
    static final int RUNS = Integer.getInteger("gmem.hostile.runs", 240);
    static final long SEED = Long.getLong("gmem.hostile.seed", System.nanoTime());

    static GuestMemory create(Backing backing) {
        // One huge page on the backings of huge pages: their files are whole huge pages.
        return GuestMemory.create(Math.max(PAGES * PAGE, backing.blockSize()), FLAGS, backing);
    }

    /** Fills page 0 of a fresh file with {@link #MARK}: the victim of any stray fd use. */
    static GuestMemory victim(Backing backing) {
        GuestMemory v = create(backing);
        try (HostMapping map = v.map(0, PAGE)) {
            byte[] mark = new byte[(int) PAGE];
            Arrays.fill(mark, MARK);
            map.write(0, mark);
        }
        return v;
    }

    static void assertVictimIntact(GuestMemory v) {
        try (HostMapping map = v.map(0, PAGE)) {
            byte[] page = map.read(0, (int) PAGE);
            for (byte b : page) {
                if (b != MARK) {
                    fail("a file created after close() lost its first page: the closed file's operation acted on a reused fd");
                }
            }
        }
    }

    /** Waits (bounded) until {@code t} is parked, as a thread waiting for a pin or the lock is. */
    static void awaitParked(Thread t) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (t.getState() != Thread.State.TIMED_WAITING && t.getState() != Thread.State.WAITING) {
            if (!t.isAlive() || System.nanoTime() > deadline) {
                return;
            }
            Thread.sleep(0, 100_000);
        }
    }

    /** Runs {@code action} on a new thread; {@link #outcome} names how it ended. */
    static CompletableFuture<Void> onThread(Runnable action, AtomicReference<Thread> thread) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        Thread t = Thread.ofPlatform().daemon().start(() -> {
            try {
                action.run();
                done.complete(null);
            } catch (Throwable e) {
                done.completeExceptionally(e);
            }
        });
        thread.set(t);
        return done;
    }

    /** {@return "ok", the errno name, or the exception class; fails on a hang} */
    static String outcome(CompletableFuture<Void> done) throws InterruptedException {
        try {
            done.get(20, TimeUnit.SECONDS);
            return "ok";
        } catch (TimeoutException e) {
            throw new AssertionError("the operation hung after the concurrent close/unmap/unbind/unpin", e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            return cause instanceof GuestMemoryException g ? g.errno().name() : cause.toString();
        }
    }

    // ---------------------------------------------------------------- close while a conversion waits for a pin

    @TestFactory
    @Timeout(value = 60)
    List<DynamicTest> closeWhileAConversionWaitsForAPinRefusesItWithEbadfAndTouchesNoOtherFile() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Backing backing : Backing.available()) {
            tests.add(DynamicTest.dynamicTest(backing.name(), () -> {
                for (int run = 0; run < 20; run++) {
                    GuestMemory m = create(backing);
                    m.pinWait(Duration.ofSeconds(30));
                    m.allocate(0, PAGE);
                    m.pin(0, PAGE);
                    AtomicReference<Thread> t = new AtomicReference<>();
                    CompletableFuture<Void> convert = onThread(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED), t);
                    awaitParked(t.get());
                    m.close();
                    GuestMemory v = victim(backing);
                    try {
                        assertThat(outcome(convert)).as("a conversion waiting for a pin when the file closed").isEqualTo("EBADF");
                        assertVictimIntact(v);
                    } finally {
                        v.close();
                    }
                }
            }));
        }
        return tests;
    }

    // ---------------------------------------------------------------- seeded races

    enum Blocker {
        /** A conversion to private waiting for a pin. */
        PIN_WAIT,
        /** A conversion whose owner callback (prepareInaccessible) is in progress. */
        CONVERT_CALLBACK,
        /** A punch whose owner callback (invalidateBegin) is in progress. */
        PUNCH_CALLBACK,
        /** A populate whose owner callback is in progress. */
        POPULATE_CALLBACK
    }

    enum Disruptor { CLOSE, UNPIN, UNMAP, UNBIND }

    /**
     * An owner that holds its callbacks until the disruptor is parked on the file (or a
     * bounded while), and records any call it receives after it was released.
     */
    static final class SlowOwner implements Owner {
        final CountDownLatch inCallback = new CountDownLatch(1);
        final AtomicReference<Thread> disruptor = new AtomicReference<>();
        final List<String> afterRelease = new java.util.concurrent.CopyOnWriteArrayList<>();
        final long holdNanos;
        volatile boolean released;

        SlowOwner(long holdNanos) {
            this.holdNanos = holdNanos;
        }

        void hold(String call) {
            if (released) {
                afterRelease.add(call);
            }
            inCallback.countDown();
            long deadline = System.nanoTime() + holdNanos;
            while (System.nanoTime() < deadline) {
                Thread d = disruptor.get();
                if (d != null && (d.getState() == Thread.State.WAITING || d.getState() == Thread.State.BLOCKED
                        || d.getState() == Thread.State.TERMINATED)) {
                    return;
                }
                Thread.onSpinWait();
            }
        }

        @Override
        public void invalidateBegin(Binding b, long offset, long length, Invalidation why) {
            hold("invalidateBegin");
        }

        @Override
        public void invalidateEnd(Binding b, long offset, long length, Invalidation why) {
            if (released) {
                afterRelease.add("invalidateEnd");
            }
        }

        @Override
        public void prepareInaccessible(Binding b, long offset, long length, Content content) {
            hold("prepareInaccessible");
        }

        @Override
        public void populate(Binding b, long offset, long length) {
            hold("populate");
        }

        @Override
        public void release(Binding b) {
            released = true;
        }
    }

    /** One seeded run: {@code blocker} starts, {@code disruptor} strikes from another thread, and nothing may go wrong. */
    static void race(Backing backing, Blocker blocker, Disruptor disruptor, SplittableRandom random) throws Exception {
        GuestMemory m = create(backing);
        m.pinWait(Duration.ofSeconds(20));
        m.allocate(0, 4 * PAGE);
        SlowOwner owner = new SlowOwner(TimeUnit.MILLISECONDS.toNanos(random.nextInt(1, 50)));
        if (blocker == Blocker.POPULATE_CALLBACK) {
            m.convert(0, 4 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        }
        Binding binding = m.bind(owner, 0, 8 * PAGE);
        HostMapping map = m.map(0, SIZE_PAGES * PAGE);
        if (blocker != Blocker.POPULATE_CALLBACK) {
            map.lease(PAGE, PAGE);  // revoked by the conversion, or by the unmap
        }
        Pin pin = blocker == Blocker.POPULATE_CALLBACK ? m.pin(8 * PAGE, PAGE) : m.pin(0, PAGE);
        if (blocker != Blocker.PIN_WAIT) {
            pin.close();
            pin = m.pin(12 * PAGE, PAGE);  // a pin elsewhere, for the unpin to drop
        }
        AtomicReference<Thread> opThread = new AtomicReference<>();
        CompletableFuture<Void> op = onThread(() -> {
            switch (blocker) {
                case PIN_WAIT, CONVERT_CALLBACK -> m.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
                case PUNCH_CALLBACK -> m.punchHole(0, 2 * PAGE);
                case POPULATE_CALLBACK -> binding.populate(0, MemorySegment.ofArray(new byte[(int) PAGE]), null);
            }
        }, opThread);
        // Strike before, during or after the block, as the seed says.
        switch (random.nextInt(3)) {
            case 0 -> { }
            case 1 -> Thread.sleep(0, random.nextInt(200_000));
            default -> {
                if (blocker == Blocker.PIN_WAIT) {
                    awaitParked(opThread.get());
                } else {
                    owner.inCallback.await(10, TimeUnit.SECONDS);
                }
            }
        }
        Pin pinned = pin;
        AtomicReference<Thread> strikeThread = new AtomicReference<>();
        CompletableFuture<Void> strike = onThread(() -> {
            owner.disruptor.set(Thread.currentThread());
            switch (disruptor) {
                case CLOSE -> m.close();
                case UNPIN -> pinned.close();
                case UNMAP -> map.close();
                case UNBIND -> binding.close();
            }
        }, strikeThread);
        String struck = outcome(strike);
        GuestMemory v = disruptor == Disruptor.CLOSE ? victim(backing) : null;
        try {
            assertThat(struck).as("%s during %s", disruptor, blocker).isEqualTo("ok");
            pinned.close();  // let a conversion still waiting for the pin go on
            String result = outcome(op);
            // Closed while waiting for a pin that outlives the close, a conversion can only fail;
            // closed around an owner callback, the close waits for the operation, or comes first.
            // A populate through a binding unbound before it starts is refused too.
            Set<String> allowed = disruptor == Disruptor.UNBIND && blocker == Blocker.POPULATE_CALLBACK ? Set.of("ok", "EBADF")
                    : disruptor != Disruptor.CLOSE ? Set.of("ok")
                    : blocker == Blocker.PIN_WAIT ? Set.of("EBADF") : Set.of("ok", "EBADF");
            assertThat(result).as("%s during %s", disruptor, blocker).isIn(allowed);
            assertThat(owner.afterRelease).as("owner calls after release, %s during %s", disruptor, blocker).isEmpty();
            if (v != null) {
                assertVictimIntact(v);
                assertThat(m.isClosed()).isTrue();
            } else {
                assertThat(m.pageRuns()).isNotEmpty();  // the file still works
                if (blocker != Blocker.PUNCH_CALLBACK && blocker != Blocker.POPULATE_CALLBACK) {
                    assertThat(m.attribute(0)).isEqualTo(Attribute.PRIVATE);
                }
            }
        } finally {
            m.close();
            if (v != null) {
                v.close();
            }
        }
    }

    static final long SIZE_PAGES = PAGES;

    @TestFactory
    @Timeout(value = 100)
    List<DynamicTest> closeUnpinUnmapUnbindFromOtherThreadsDuringEveryBlockingOperation() {
        System.out.println("HostileLifecycleTest seed " + SEED + ", " + RUNS + " runs per backing (-Dgmem.hostile.seed="
                + SEED + " repeats them)");
        List<DynamicTest> tests = new ArrayList<>();
        for (Backing backing : Backing.available()) {
            tests.add(DynamicTest.dynamicTest(backing.name(), () -> {
                SplittableRandom random = new SplittableRandom(SEED ^ backing.ordinal());
                Blocker[] blockers = Blocker.values();
                Disruptor[] disruptors = Disruptor.values();
                for (int run = 0; run < RUNS; run++) {
                    // Every pair once per round, in a seeded order of timings.
                    Blocker b = blockers[run % blockers.length];
                    Disruptor d = disruptors[(run / blockers.length) % disruptors.length];
                    try {
                        race(backing, b, d, random.split());
                    } catch (AssertionError | Exception e) {
                        throw new AssertionError("run " + run + " (" + d + " during " + b + ") of seed " + SEED + " on " + backing, e);
                    }
                }
            }));
        }
        return tests;
    }

    // ---------------------------------------------------------------- calls from owner callbacks

    /** An owner that, from inside a callback, calls the file back once and keeps what happened. */
    static final class CallingBack implements Owner {
        final String at;
        final Consumer<Binding> call;
        final boolean swallow;
        final List<String> outcomes = new ArrayList<>();

        CallingBack(String at, Consumer<Binding> call, boolean swallow) {
            this.at = at;
            this.call = call;
            this.swallow = swallow;
        }

        void maybe(String where, Binding b) {
            if (!where.equals(at) || !outcomes.isEmpty()) {
                return;
            }
            try {
                call.accept(b);
                outcomes.add("ok");
            } catch (GuestMemoryException e) {
                outcomes.add(e.errno().name());
                if (!swallow) {
                    throw e;
                }
            }
        }

        @Override
        public void bound(Binding b) {
            maybe("bound", b);
        }

        @Override
        public void invalidateBegin(Binding b, long offset, long length, Invalidation why) {
            maybe("invalidateBegin", b);
        }

        @Override
        public void prepareInaccessible(Binding b, long offset, long length, Content content) {
            maybe("prepareInaccessible", b);
        }

        @Override
        public void prepareAccessible(Binding b, long offset, long length, Content content) {
            maybe("prepareAccessible", b);
        }

        @Override
        public void populate(Binding b, long offset, long length) {
            maybe("populate", b);
        }
    }

    record Reentry(String name, String at, Consumer<Binding> call, Consumer<Binding> trigger, String expected) {
    }

    static List<Reentry> reentries() {
        Consumer<Binding> toPrivate = b -> b.memory().convert(0, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        Consumer<Binding> toShared = b -> {
            b.memory().convert(0, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            b.memory().convert(0, 2 * PAGE, Attribute.SHARED, Content.ZERO);
        };
        Consumer<Binding> punch = b -> b.memory().punchHole(0, 2 * PAGE);
        Consumer<Binding> populate = b -> {
            b.memory().convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            b.populate(0, MemorySegment.ofArray(new byte[8]), null);
        };
        return List.of(
                new Reentry("punchHole of the range from prepareInaccessible", "prepareInaccessible",
                        b -> b.memory().punchHole(0, PAGE), toPrivate, "EDEADLK"),
                new Reentry("convert from prepareInaccessible", "prepareInaccessible",
                        b -> b.memory().convert(4 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED), toPrivate, "EDEADLK"),
                new Reentry("convert from prepareAccessible", "prepareAccessible",
                        b -> b.memory().convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED), toShared, "EDEADLK"),
                new Reentry("pin of the range from prepareAccessible", "prepareAccessible",
                        b -> b.memory().pin(0, PAGE).close(), toShared, "EDEADLK"),
                new Reentry("close from prepareInaccessible", "prepareInaccessible", b -> b.memory().close(), toPrivate, "EDEADLK"),
                new Reentry("close from invalidateBegin of a punch", "invalidateBegin", b -> b.memory().close(), punch, "EDEADLK"),
                new Reentry("close from populate", "populate", b -> b.memory().close(), populate, "EDEADLK"),
                new Reentry("punchHole elsewhere from prepareInaccessible", "prepareInaccessible",
                        b -> b.memory().punchHole(8 * PAGE, PAGE), toPrivate, "ok"),
                new Reentry("unbind from prepareInaccessible", "prepareInaccessible", Binding::close, toPrivate, "ok"));
    }

    @TestFactory
    @Timeout(value = 60)
    List<DynamicTest> aCallFromAnOwnerCallbackThatWouldWaitOnItselfFailsAtOnceWithEdeadlk() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Backing backing : Backing.available()) {
            for (Reentry r : reentries()) {
                for (boolean swallow : new boolean[] {true, false}) {
                    tests.add(DynamicTest.dynamicTest(backing + ": " + r.name() + (swallow ? ", caught" : ", thrown on"), () -> {
                        GuestMemory m = create(backing);
                        GuestMemory v = null;
                        try {
                            CallingBack owner = new CallingBack(r.at(), r.call(), swallow);
                            Binding binding = m.bind(owner, 0, 8 * PAGE);
                            AtomicReference<Thread> t = new AtomicReference<>();
                            String result = outcome(onThread(() -> r.trigger().accept(binding), t));  // bounded: a hang fails
                            assertThat(owner.outcomes).as("the call from the callback").containsExactly(r.expected());
                            assertThat(result).as("the operation that called the owner")
                                    .isEqualTo(swallow || r.expected().equals("ok") ? "ok" : r.expected());
                            assertThat(m.isClosed()).as("a refused close leaves the file open").isFalse();
                            m.close();
                            v = victim(backing);
                            assertVictimIntact(v);
                        } finally {
                            m.close();
                            if (v != null) {
                                v.close();
                            }
                        }
                    }));
                }
            }
        }
        return tests;
    }

    // ---------------------------------------------------------------- failed binds and failing owners

    @TestFactory
    List<DynamicTest> aFailedBindLeavesNothingBehind() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Backing backing : Backing.available()) {
            tests.add(DynamicTest.dynamicTest(backing.name(), () -> {
                try (GuestMemory m = create(backing)) {
                    org.assertj.core.api.Assertions.assertThatThrownBy(() -> m.bind(null, 0, PAGE))
                            .isInstanceOf(NullPointerException.class).hasMessageContaining("owner");
                    Owner failing = new Owner() {
                        @Override
                        public void bound(Binding b) {
                            throw new IllegalStateException("the owner cannot take it");
                        }
                    };
                    org.assertj.core.api.Assertions.assertThatThrownBy(() -> m.bind(failing, 0, PAGE))
                            .isInstanceOf(IllegalStateException.class);
                    // Nothing is left: the range binds again, conversions and punches work, close closes.
                    List<String> calls = new ArrayList<>();
                    Binding b = m.bind(new Owner() {
                        @Override
                        public void prepareInaccessible(Binding b, long offset, long length, Content content) {
                            calls.add("prepare");
                        }
                    }, 0, PAGE);
                    m.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
                    m.punchHole(0, PAGE);
                    assertThat(calls).containsExactly("prepare");
                    b.close();
                }
            }));
            tests.add(DynamicTest.dynamicTest(backing + ": an owner throwing from release does not keep the file open", () -> {
                GuestMemory m = create(backing);
                m.bind(new Owner() {
                    @Override
                    public void release(Binding b) {
                        throw new IllegalStateException("release failed");
                    }
                }, 0, PAGE);
                List<String> released = new ArrayList<>();
                m.bind(new Owner() {
                    @Override
                    public void release(Binding b) {
                        released.add("second");
                    }
                }, PAGE, PAGE);
                org.assertj.core.api.Assertions.assertThatThrownBy(m::close).isInstanceOf(IllegalStateException.class);
                assertThat(m.isClosed()).isTrue();
                assertThat(released).containsExactly("second");
                Errors.assertErrno(m::fd, "EBADF");
                GuestMemory v = victim(backing);
                try {
                    m.close();
                    assertVictimIntact(v);
                } finally {
                    v.close();
                }
            }));
            tests.add(DynamicTest.dynamicTest(backing + ": an owner throwing from invalidateEnd does not hide the refusal", () -> {
                try (GuestMemory m = create(backing)) {
                    m.bind(new Owner() {
                        @Override
                        public void prepareInaccessible(Binding b, long offset, long length, Content content) throws OwnerRefusal {
                            throw new OwnerRefusal(offset, "no");
                        }

                        @Override
                        public void invalidateEnd(Binding b, long offset, long length, Invalidation why) {
                            throw new IllegalStateException("invalidateEnd failed");
                        }
                    }, 0, PAGE);
                    GuestMemoryException refused = Errors.assertErrno(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED), "EPERM");
                    assertThat(refused.getSuppressed()).singleElement().isInstanceOf(IllegalStateException.class);
                    assertThat(m.attribute(0)).isEqualTo(Attribute.SHARED);
                }
            }));
            tests.add(DynamicTest.dynamicTest(backing + ": an owner throwing from prepare rolls the others back", () -> {
                try (GuestMemory m = create(backing)) {
                    List<String> first = new ArrayList<>();
                    m.bind(new Owner() {
                        @Override
                        public void prepareInaccessible(Binding b, long offset, long length, Content content) {
                            first.add("prepare");
                        }

                        @Override
                        public void rollback(Binding b, long offset, long length, Attribute attribute) {
                            first.add("rollback to " + attribute);
                        }
                    }, 0, PAGE);
                    m.bind(new Owner() {
                        @Override
                        public void prepareInaccessible(Binding b, long offset, long length, Content content) {
                            throw new IllegalStateException("owner bug");
                        }
                    }, PAGE, PAGE);
                    List<PageRun> before = m.pageRuns();
                    org.assertj.core.api.Assertions.assertThatThrownBy(() -> m.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED))
                            .isInstanceOf(IllegalStateException.class);
                    assertThat(first).containsExactly("prepare", "rollback to SHARED");
                    assertThat(m.pageRuns()).isEqualTo(before);
                    assertThat(m.conversions()).isZero();
                }
            }));
        }
        return tests;
    }
}
