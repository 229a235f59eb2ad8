package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.Backing;
import dev.guestmemfd.testing.RequiresKvm;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The kick signal (40) must never reach a thread that does not block it: its default action
 * ends the process, with no hs_err file. These tests boot, run, kick, pause and close many
 * small machines at once, with busy threads around them so that vCPU threads are descheduled
 * at every step; if any interleaving let a kick through, the test JVM would die and the fork
 * would fail.
 */
@RequiresKvm
class KickStressTest {
    /** How long each test hammers; the {@link Timeout} bounds it whatever happens. */
    private static final Duration HAMMER = Duration.ofSeconds(8);

    /**
     * Kicks arrive from a kicker thread, from {@link Machine.Running#pause()} and from
     * {@link Vm#close()} while vCPU threads start, run and end; kicks queue (signal 40 is a
     * real-time signal), and a vCPU thread ends right after its last run.
     */
    @Test
    @Timeout(60)
    void kicksFromEverywhereWhileVcpuThreadsComeAndGoNeverEndTheProcess() throws Exception {
        AtomicBoolean done = new AtomicBoolean();
        List<Thread> busy = busyThreads(done);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        long rounds = 0;
        long deadline = System.nanoTime() + HAMMER.toNanos();
        try (Kvm kvm = Kvm.open()) {
            while (System.nanoTime() < deadline) {
                Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 3);
                Machine machine = Machine.boot(kvm, config);
                AtomicBoolean stop = new AtomicBoolean();
                Thread kicker = kicker(stop, failure, machine.vcpus());
                try {
                    Machine.Running running = machine.start();
                    Thread.sleep(rounds % 3);
                    Machine.Outcome outcome = running.pause();
                    assertThat(outcome.vcpus()).hasSize(3).allSatisfy(v -> assertThat(v.how()).isEqualTo("timeout"));
                    // A second run of the same vCPUs, by new threads, after kicks at none.
                    outcome = machine.start().pause();
                    assertThat(outcome.vcpus()).allSatisfy(v -> assertThat(v.how()).isEqualTo("timeout"));
                } finally {
                    // The kicker goes on while the VM closes (which kicks too).
                    machine.close();
                    stop.set(true);
                    kicker.join();
                }
                rounds++;
            }
        } finally {
            done.set(true);
            for (Thread t : busy) {
                t.join();
            }
        }
        assertThat(failure.get()).as("a kick failed").isNull();
        assertThat(rounds).isPositive();
    }

    /**
     * A vCPU run directly, by short-lived threads of the caller's own (not Machine's), one
     * after another, while another thread kicks it: no thread may stay the target of a kick
     * after it stopped running the vCPU, nor carry a queued kick to its end.
     */
    @Test
    @Timeout(60)
    void aVcpuRunByShortLivedThreadsOfItsOwnWhileKickedNeverEndsTheProcess() throws Exception {
        AtomicBoolean done = new AtomicBoolean();
        List<Thread> busy = busyThreads(done);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        AtomicLong runs = new AtomicLong();
        long deadline = System.nanoTime() + HAMMER.toNanos();
        try (Kvm kvm = Kvm.open();
             Machine machine = Machine.boot(kvm, Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 1))) {
            Vcpu vcpu = machine.vcpus().getFirst();
            AtomicBoolean stop = new AtomicBoolean();
            Thread kicker = kicker(stop, failure, List.of(vcpu));
            try {
                while (System.nanoTime() < deadline) {
                    // Each thread runs the vCPU until a kick ends a run, then ends at once.
                    Thread runner = Thread.ofPlatform().name("runner").start(() -> {
                        while (!(vcpu.run() instanceof VmExit.Interrupted)) {
                            runs.incrementAndGet();
                        }
                        runs.incrementAndGet();
                    });
                    runner.join(Duration.ofSeconds(10));
                    assertThat(runner.isAlive()).as("a kicked runner ends").isFalse();
                }
            } finally {
                stop.set(true);
                kicker.join();
            }
        } finally {
            done.set(true);
            for (Thread t : busy) {
                t.join();
            }
        }
        assertThat(failure.get()).as("a kick failed").isNull();
        assertThat(runs.get()).isPositive();
    }

    /** A thread that kicks {@code vcpus} until {@code stop}, keeping the first failure. */
    private static Thread kicker(AtomicBoolean stop, AtomicReference<Throwable> failure, List<Vcpu> vcpus) {
        return Thread.ofPlatform().name("kicker").start(() -> {
            try {
                while (!stop.get()) {
                    for (Vcpu v : vcpus) {
                        v.kick();
                    }
                }
            } catch (RuntimeException | Error e) {
                failure.compareAndSet(null, e);
            }
        });
    }

    /** Threads that spin until {@code done}, to keep every core busy and deschedule the others. */
    private static List<Thread> busyThreads(AtomicBoolean done) {
        List<Thread> busy = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            busy.add(Thread.ofPlatform().name("busy-" + i).start(() -> {
                long x = 0;
                while (!done.get()) {
                    x += System.nanoTime() & 1;
                }
                if (x == 42) {
                    Thread.onSpinWait();
                }
            }));
        }
        return busy;
    }
}
