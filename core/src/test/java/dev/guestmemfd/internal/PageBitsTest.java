package dev.guestmemfd.internal;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.testing.Gen;
import dev.guestmemfd.testing.SequenceProperty;
import dev.guestmemfd.testing.Shrink;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** PageBits against a plain BitSet, across chunk boundaries and container changes. */
class PageBitsTest {
    /** Three chunks and a bit: every path (inside a chunk, across, whole chunks) is reachable. */
    static final int PAGES = 3 * PageBits.CHUNK_PAGES + 100;

    record Set(int start, int end, boolean value) { }

    /** How the bits start: all set or all clear, and whether chunk 1 is a bitmap already. */
    record Start(boolean initial, boolean striped) { }

    static Gen<Set> sets() {
        Gen<Integer> page = Gen.oneOf(
                Gen.ints(0, PAGES),
                Gen.elements(0, PageBits.CHUNK_PAGES, 2 * PageBits.CHUNK_PAGES, PAGES),
                Gen.ints(0, 300));
        Gen<Boolean> values = Gen.booleans();
        Gen<Integer> lengths = Gen.ints(0, 2000);
        Gen<Set> set = r -> {
            int s = page.next(r);
            int len = lengths.next(r);
            return new Set(Math.min(s, PAGES), Math.min(PAGES, s + len), values.next(r));
        };
        Gen<Set> wide = r -> {
            int a = page.next(r);
            int b = page.next(r);
            return new Set(Math.min(a, b), Math.max(a, b), values.next(r));
        };
        return Gen.frequency(Gen.weighted(2, set), Gen.weighted(1, wide));
    }

    /** {@return shorter ranges: the same start, a nearer end; then the same length, nearer page 0} */
    static List<Set> simpler(Set s) {
        List<Set> simpler = new ArrayList<>();
        Shrink.towards(s.end(), s.start()).forEach(end -> simpler.add(new Set(s.start(), end, s.value())));
        Shrink.towards(s.start(), 0).forEach(start -> simpler.add(new Set(start, start + s.end() - s.start(), s.value())));
        return simpler;
    }

    @Test
    @Timeout(value = 5, unit = TimeUnit.MINUTES)
    void behavesLikeABitSet() {
        SequenceProperty.of("PageBitsTest", r -> new Start(r.nextBoolean(), r.nextBoolean()), sets(), 0, 80)
                .tries(400)
                .simplerOperations(PageBitsTest::simpler)
                .check((start, sets) -> behavesLikeABitSet(sets, start.initial(), start.striped()));
    }

    static void behavesLikeABitSet(List<Set> sets, boolean initial, boolean striped) {
        PageBits bits = new PageBits(initial, PAGES);
        BitSet model = new BitSet(PAGES);
        if (initial) {
            model.set(0, PAGES);
        }
        if (striped) {
            // Enough flips in chunk 1 that its runs become a bitmap.
            for (int p = PageBits.CHUNK_PAGES; p < PageBits.CHUNK_PAGES + 3 * PageBits.MAX_FLIPS; p += 2) {
                bits.set(p, p + 1, !initial);
                model.set(p, p + 1, !initial);
            }
        }
        for (Set s : sets) {
            bits.set(s.start(), s.end(), s.value());
            model.set(s.start(), s.end(), s.value());
        }
        for (int probe = 0; probe < PAGES; probe += 97) {
            assertThat(bits.isSet(probe)).as("page %d", probe).isEqualTo(model.get(probe));
        }
        List<Long> flips = new ArrayList<>();
        bits.forEachFlip(1, PAGES, flips::add);
        List<Long> expected = new ArrayList<>();
        for (int p = 1; p < PAGES; p++) {
            if (model.get(p) != model.get(p - 1)) {
                expected.add((long) p);
            }
        }
        assertThat(flips).isEqualTo(expected);
        for (int from : new int[] {0, 5, PageBits.CHUNK_PAGES + 3, PageBits.CHUNK_PAGES + 4001}) {
            int set = model.nextSetBit(from);
            int clear = model.nextClearBit(from);
            assertThat(bits.firstSet(from, PAGES)).isEqualTo(set < 0 || set >= PAGES ? -1 : set);
            assertThat(bits.firstClear(from, PAGES)).isEqualTo(clear >= PAGES ? -1 : clear);
        }
    }

    @Test
    void everyOtherPageCostsAtMostOneBitPerPage() {
        long pages = 1L << 18;  // 1 GiB
        PageBits bits = new PageBits(false, pages);
        for (long p = 0; p < pages; p += 2) {
            bits.set(p, p + 1, true);
        }
        assertThat(bits.bytesUsed() * 8).isLessThanOrEqualTo(pages + 4096 * 8);
        assertThat(bits.isSet(2)).isTrue();
        assertThat(bits.isSet(3)).isFalse();
    }

    @Test
    void aWholeTerabyteIsOneRun() {
        long pages = 1L << 28;
        PageBits bits = new PageBits(false, pages);
        long empty = bits.bytesUsed();
        bits.set(0, pages, true);
        bits.set(0, pages, false);
        bits.set(12345, pages - 7, true);
        assertThat(bits.bytesUsed()).isLessThan(empty + 1024);
        assertThat(bits.firstSet(0, pages)).isEqualTo(12345);
        assertThat(bits.firstClear(12345, pages)).isEqualTo(pages - 7);
    }
}
