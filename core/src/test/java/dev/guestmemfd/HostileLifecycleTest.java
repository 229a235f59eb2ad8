package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
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
    static final int RUNS = Integer.getInteger("gmem.hostile.runs", 60);
    static final long SEED = Long.getLong("gmem.hostile.seed", System.nanoTime());

    static GuestMemory create(Backing backing) {
        return GuestMemory.create(PAGES * PAGE, FLAGS, backing);
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
                    CompletableFuture<Void> convert = onThread(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.ZERO), t);
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
}
