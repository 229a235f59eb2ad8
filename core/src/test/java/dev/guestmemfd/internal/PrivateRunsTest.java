package dev.guestmemfd.internal;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Random;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** The lock-free copy of the attributes against the locked one, over random conversions. */
class PrivateRunsTest {
    @Test
    void agreesWithPageBitsAfterEveryRandomConversion() {
        Random rnd = new Random(13);
        for (int round = 0; round < 50; round++) {
            long pages = 1 + rnd.nextInt(200);
            boolean initial = rnd.nextBoolean();
            PageBits bits = new PageBits(initial, pages);
            PrivateRuns runs = new PrivateRuns(initial, pages);
            for (int step = 0; step < 200; step++) {
                long start = rnd.nextLong(pages);
                long end = start + 1 + rnd.nextLong(pages - start);
                boolean priv = rnd.nextBoolean();
                bits.set(start, end, priv);
                runs.set(start, end, priv);
                for (int q = 0; q < 20; q++) {
                    long a = rnd.nextLong(pages);
                    long b = a + 1 + rnd.nextLong(pages - a);
                    assertThat(runs.firstPrivate(a, b)).as("first private in [%d, %d)", a, b).isEqualTo(bits.firstSet(a, b));
                }
            }
            long[] flips = {0};
            bits.forEachRun(0, pages, true, (from, to) -> flips[0]++);
            assertThat(runs.runs()).as("maximal runs, as many as the bit map has").isEqualTo((int) flips[0]);
        }
    }

    @Test
    void aReaderOfOtherPagesNeverSeesAWriterHalfWay() throws Exception {
        // Pages [0, 64) fixed: private where p % 8 < 3, and runs that the writer's ranges touch
        // at their edges; the writer converts random ranges of [64, 128) and [0, 64) is never written.
        PrivateRuns runs = new PrivateRuns(false, 192);
        PageBits expected = new PageBits(false, 192);
        for (long p = 0; p < 64; p += 8) {
            runs.set(p, p + 3, true);
            expected.set(p, p + 3, true);
        }
        runs.set(60, 64, true);
        expected.set(60, 64, true);
        runs.set(128, 140, true);
        expected.set(128, 140, true);
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong wrong = new AtomicLong();
        AtomicLong reads = new AtomicLong();
        Thread reader = Thread.ofPlatform().start(() -> {
            ThreadLocalRandom rnd = ThreadLocalRandom.current();
            while (!stop.get()) {
                long a = rnd.nextBoolean() ? rnd.nextLong(64) : 128 + rnd.nextLong(64);
                long b = a + 1 + rnd.nextLong((a < 64 ? 64 : 192) - a);
                if (runs.firstPrivate(a, b) != expected.firstSet(a, b)) {
                    wrong.incrementAndGet();
                }
                reads.incrementAndGet();
            }
        });
        ThreadLocalRandom rnd = ThreadLocalRandom.current();
        long deadline = System.nanoTime() + 300_000_000L;
        while (System.nanoTime() < deadline) {
            long start = 64 + rnd.nextLong(64);
            long end = start + 1 + rnd.nextLong(128 - start);
            runs.set(start, end, rnd.nextBoolean());
        }
        stop.set(true);
        reader.join(10_000);
        assertThat(reads.get()).isPositive();
        assertThat(wrong.get()).as("reads of unconverted pages that saw a conversion half-way").isZero();
    }
}
