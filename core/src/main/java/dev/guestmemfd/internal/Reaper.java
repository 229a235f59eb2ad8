package dev.guestmemfd.internal;

import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;

/**
 * Finishes what could not be finished when it was asked for: closing an arena that a native
 * call still holds, unmapping addresses that such an arena still reaches. Each task is tried
 * again every millisecond until it reports done, by one daemon thread that exists only while
 * tasks are pending.
 *
 * @implSpec Thread safe. A task must be cheap when it cannot finish yet, and must not block.
 */
public final class Reaper {
    private static final long PERIOD_MILLIS = 1;
    private static final List<BooleanSupplier> TASKS = new ArrayList<>();
    private static Thread thread;

    private Reaper() {
    }

    /** Tries {@code task} until it returns true; a task that throws is dropped. */
    public static synchronized void schedule(BooleanSupplier task) {
        TASKS.add(task);
        if (thread == null) {
            thread = Thread.ofPlatform().daemon().name("guestmemfd-reaper").start(Reaper::run);
        }
    }

    /** {@return the number of tasks not yet done} */
    public static synchronized int pending() {
        return TASKS.size();
    }

    private static void run() {
        while (true) {
            List<BooleanSupplier> round;
            synchronized (Reaper.class) {
                if (TASKS.isEmpty()) {
                    thread = null;
                    return;
                }
                round = List.copyOf(TASKS);
            }
            List<BooleanSupplier> done = new ArrayList<>();
            for (BooleanSupplier task : round) {
                boolean finished;
                try {
                    finished = task.getAsBoolean();
                } catch (RuntimeException | Error e) {
                    finished = true;  // it can never succeed; keeping it would spin for ever
                }
                if (finished) {
                    done.add(task);
                }
            }
            synchronized (Reaper.class) {
                TASKS.removeAll(done);
            }
            try {
                Thread.sleep(PERIOD_MILLIS);
            } catch (InterruptedException e) {
                // A daemon with pending tasks keeps going.
            }
        }
    }
}
