package dev.guestmemfd.testing;

import dev.guestmemfd.PageSource;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A page source whose reads wait for a gate, and can be told to fail from an offset on: a
 * slow or dying remote in front of a real source. Everything else passes through.
 */
public final class GatedPageSource extends ForwardingPageSource {
    private final CountDownLatch gate = new CountDownLatch(1);
    private final AtomicInteger reads = new AtomicInteger();
    /** Reads of extents from this offset on fail; none while it is {@link Long#MAX_VALUE}. */
    private volatile long deadFrom = Long.MAX_VALUE;

    public GatedPageSource(PageSource inner) {
        super(inner);
    }

    /** Lets every read waiting, and every later one, through. */
    public void open() {
        gate.countDown();
    }

    /** {@return how many reads began, waiting or not} */
    public int reads() {
        return reads.get();
    }

    /** Makes every read fail once the gate opens: the source died. */
    public void die() {
        dieFrom(0);
    }

    /** Makes reads of extents that start at {@code offset} or later fail once the gate opens. */
    public void dieFrom(long offset) {
        deadFrom = offset;
    }

    @Override
    public void read(Extent extent, MemorySegment into) throws IOException {
        reads.incrementAndGet();
        try {
            if (!gate.await(60, TimeUnit.SECONDS)) {
                throw new IOException("gate never opened");
            }
        } catch (InterruptedException e) {
            throw new IOException(e);
        }
        if (extent.offset() >= deadFrom) {
            throw new IOException("the source died");
        }
        inner.read(extent, into);
    }
}
