package dev.guestmemfd;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The file, its mappings, leases, pins and bindings closed from other threads at random
 * moments while host threads use all of them, scoped accesses and segments held by native
 * calls included: every call ends in its result or in the library's clean refusal, never in
 * a crash, a hang or an exception half-way through a close.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class CloseRaceTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final int PAGES = 16;

    @Test
    void closingEveryObjectWhileOthersUseItEndsCleanly() throws Exception {
        List<Throwable> unexpected = new CopyOnWriteArrayList<>();
        AtomicLong refusals = new AtomicLong();
        AtomicLong done = new AtomicLong();
        for (int round = 0; round < 30; round++) {
            GuestMemory memory = GuestMemory.create(PAGES * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
            HostMapping mapping = memory.map(0, PAGES * PAGE);
            Binding binding = memory.bind(new Owner() { }, 0, PAGES * PAGE);
            AtomicBoolean stop = new AtomicBoolean();
            List<NativeHoldTest.BlockedRead> held = new CopyOnWriteArrayList<>();
            Runnable user = () -> {
                ThreadLocalRandom rnd = ThreadLocalRandom.current();
                while (!stop.get()) {
                    long at = rnd.nextInt(PAGES) * PAGE;
                    try {
                        switch (rnd.nextInt(7)) {
                            case 0 -> mapping.access(at, PAGE, s -> s.set(JAVA_LONG, 8, s.get(JAVA_LONG, 0) + 1));
                            case 1 -> mapping.write(at, new byte[] {1, 2, 3, 4});
                            case 2 -> mapping.read(at, 64);
                            case 3 -> {
                                try (Lease lease = mapping.lease(at, PAGE)) {
                                    lease.segment().set(JAVA_LONG, 16, 7);
                                }
                            }
                            case 4 -> {
                                try (Pin pin = memory.pin(at, PAGE)) {
                                    pin.segment().set(JAVA_LONG, 24, 7);
                                }
                            }
                            case 5 -> memory.convert(at, PAGE, rnd.nextBoolean() ? Attribute.PRIVATE : Attribute.SHARED, Content.ZERO);
                            default -> {
                                if (held.size() < 2) {
                                    Lease lease = mapping.lease(at, PAGE);
                                    held.add(new NativeHoldTest.BlockedRead(lease.segment()));
                                    if (rnd.nextBoolean()) {
                                        lease.close();  // closed while the call holds it
                                    }
                                }
                            }
                        }
                        done.incrementAndGet();
                    } catch (GuestMemoryException e) {
                        refusals.incrementAndGet();  // EBADF, EFAULT, EAGAIN, a fault: clean refusals
                    } catch (IllegalStateException e) {
                        refusals.incrementAndGet();  // a segment revoked or closed under its user
                    } catch (Throwable t) {
                        unexpected.add(t);
                    }
                }
            };
            List<Thread> users = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                users.add(Thread.ofPlatform().start(user));
            }
            ThreadLocalRandom rnd = ThreadLocalRandom.current();
            Thread.sleep(rnd.nextInt(1, 30));
            // Close everything, each from its own thread, in a random order.
            List<Runnable> closes = new ArrayList<>(List.of(mapping::close, binding::close, memory::close));
            java.util.Collections.shuffle(closes);
            List<Thread> closers = new ArrayList<>();
            for (Runnable close : closes) {
                closers.add(Thread.ofPlatform().start(() -> {
                    try {
                        close.run();
                    } catch (Throwable t) {
                        unexpected.add(t);
                    }
                }));
            }
            for (Thread t : closers) {
                t.join(30_000);
            }
            stop.set(true);
            for (Thread t : users) {
                t.join(30_000);
                assertThat(t.isAlive()).as("a user thread still running").isFalse();
            }
            assertThat(memory.isClosed()).isTrue();
            for (NativeHoldTest.BlockedRead read : held) {
                read.release(0x4057L);
                read.close();
            }
        }
        assertThat(unexpected).as("failures other than the library's refusals").isEmpty();
        assertThat(done.get()).as("calls that succeeded").isPositive();
        System.out.printf("close race: %d calls succeeded, %d refused cleanly%n", done.get(), refusals.get());
    }
}
