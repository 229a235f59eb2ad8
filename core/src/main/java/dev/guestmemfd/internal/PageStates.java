package dev.guestmemfd.internal;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The one state per page of a lazy restore, which resolves every race between the fault
 * server, the background pull and host access: a page is fetched by whoever moves it from
 * {@link #ABSENT} to {@link #FETCHING} (a compare-and-set: exactly one thread wins), and is
 * {@link #DONE} once its bytes are in the file; everyone else waits for that or moves on.
 * One byte per page.
 *
 * @implSpec Thread safe; waiting is on this object's monitor, which fetches never hold.
 */
public final class PageStates {
    /** The page has bytes in the source that are not in the file yet. */
    public static final byte ABSENT = 0;
    /** One thread is bringing the page's bytes. */
    public static final byte FETCHING = 1;
    /** Nothing more to fetch: the bytes are in the file, or the page has none (a hole). */
    public static final byte DONE = 2;
    /** The page's bytes could not be brought: the restore failed. */
    public static final byte FAILED = 3;

    private static final VarHandle ELEMENT = MethodHandles.arrayElementVarHandle(byte[].class);

    private final byte[] states;
    private final AtomicLong absent = new AtomicLong();

    /** {@code pages} pages, all {@link #DONE} until {@link #expect} marks those with bytes. */
    public PageStates(int pages) {
        this.states = new byte[pages];
        java.util.Arrays.fill(states, DONE);
    }

    /** Marks {@code [first, end)} as pages whose bytes must be fetched; before any fetch starts. */
    public void expect(int first, int end) {
        long added = 0;
        for (int p = first; p < end; p++) {
            if (states[p] != ABSENT) {
                states[p] = ABSENT;
                added++;
            }
        }
        absent.addAndGet(added);
        VarHandle.fullFence();
    }

    /** {@return the number of pages} */
    public int pages() {
        return states.length;
    }

    /** {@return the state of page {@code p}} */
    public byte get(int p) {
        return (byte) ELEMENT.getVolatile(states, p);
    }

    /** {@return true when this call moved page {@code p} from absent to fetching: the caller fetches it} */
    public boolean claim(int p) {
        return ELEMENT.compareAndSet(states, p, ABSENT, FETCHING);
    }

    /** Ends the fetch of the claimed pages {@code [first, end)}: {@code DONE} or {@code FAILED}. */
    public void finish(int first, int end, byte outcome) {
        for (int p = first; p < end; p++) {
            ELEMENT.setVolatile(states, p, outcome);
        }
        absent.addAndGet(first - end);
        synchronized (this) {
            notifyAll();
        }
    }

    /** Marks every page still absent as failed: nothing will fetch them any more. */
    public void failAbsent() {
        for (int p = 0; p < states.length; p++) {
            if (claim(p)) {
                finish(p, p + 1, FAILED);
            }
        }
    }

    /** {@return the state page {@code p} settles in, after waiting while another thread fetches it} */
    public byte await(int p) throws InterruptedException {
        byte state = get(p);
        if (state != FETCHING) {
            return state;
        }
        synchronized (this) {
            while ((state = get(p)) == FETCHING) {
                wait(100);  // the fetcher notifies; the timeout only bounds a missed wake
            }
        }
        return state;
    }

    /** {@return the first absent page at or after {@code from}, or -1} */
    public int nextAbsent(int from) {
        for (int p = Math.max(0, from); p < states.length; p++) {
            if (get(p) == ABSENT) {
                return p;
            }
        }
        return -1;
    }

    /** {@return the pages absent or being fetched} */
    public long remaining() {
        return absent.get();
    }

}
