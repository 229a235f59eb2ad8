package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assumptions.assumeThat;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import javax.crypto.spec.SecretKeySpec;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Attacks on memory failure (poison) through the public API: bad offsets, every way in to a
 * poisoned page, poison under leases and bindings, snapshots of a file with poison, and
 * reportMemoryFailure racing punch and conversion.
 */
@Timeout(value = 90, unit = TimeUnit.SECONDS)
class AttackTestPoison {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final long HUGE = 2L << 20;
    private static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();

    private static void assertRefused(Runnable call, Errno errno) {
        assertThatThrownBy(call::run).isInstanceOfSatisfying(GuestMemoryException.class,
                e -> assertThat(e.errno()).isEqualTo(errno));
    }

    private static byte[] pattern(int length, int seed) {
        byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) (seed + i * 13 + (i >>> 12));
        }
        return b;
    }

    @Test
    void reportRefusesBadOffsetsAndHolesAndMarksNothing() {
        try (GuestMemory m = GuestMemory.create(16 * PAGE, FLAGS, Backing.MEMFD)) {
            m.allocate(0, PAGE);
            for (long at : new long[] {1, PAGE - 1, -PAGE, -1, Long.MIN_VALUE, Long.MAX_VALUE, m.size(), 16 * PAGE + PAGE}) {
                assertRefused(() -> m.reportMemoryFailure(at), Errno.EINVAL);
            }
            assertRefused(() -> m.reportMemoryFailure(PAGE), Errno.EINVAL); // a hole
            assertThat(m.poisonedPages()).isEmpty();
            assertRefused(() -> m.isPoisoned(m.size()), Errno.EINVAL);
            assertRefused(() -> m.isPoisoned(-PAGE), Errno.EINVAL);
            assertRefused(() -> m.isPoisoned(Long.MIN_VALUE), Errno.EINVAL);
            assertThat(m.reportMemoryFailure(0)).isTrue();
            assertThat(m.reportMemoryFailure(0)).isFalse();
            assertThat(m.poisonedPages()).containsExactly(0L);
        }
    }

    @Test
    void everyWayInToAPoisonedPageIsEhwpoisonAndNeighboursAreIntact() {
        try (GuestMemory m = GuestMemory.create(16 * PAGE, FLAGS, Backing.MEMFD); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 5);
            map.write(0, data);
            Lease lease = map.lease(4 * PAGE, 4 * PAGE);
            assertThat(m.reportMemoryFailure(5 * PAGE)).isTrue();
            assertThat(lease.isValid()).isFalse();
            assertRefused(() -> map.read(5 * PAGE, 1), Errno.EHWPOISON);
            assertRefused(() -> map.read(4 * PAGE, (int) (2 * PAGE)), Errno.EHWPOISON);
            assertRefused(() -> map.write(6 * PAGE - 1, new byte[2]), Errno.EHWPOISON);
            assertRefused(() -> map.access(5 * PAGE, 1, s -> { }), Errno.EHWPOISON);
            assertRefused(() -> map.prefault(0, m.size()), Errno.EHWPOISON);
            assertRefused(() -> map.lease(5 * PAGE, PAGE), Errno.EHWPOISON);
            assertRefused(() -> m.pin(0, m.size()), Errno.EHWPOISON);
            assertRefused(() -> m.map(5 * PAGE, PAGE), Errno.EHWPOISON);
            assertThatThrownBy(() -> m.convert(2 * PAGE, 8 * PAGE, Attribute.PRIVATE, Content.PRESERVE))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                        assertThat(e.errno()).isEqualTo(Errno.EHWPOISON);
                        assertThat(e.errorOffset()).isEqualTo(5 * PAGE);
                    });
            assertThat(m.attribute(2 * PAGE)).isEqualTo(Attribute.SHARED);
            assertThat(m.conversions()).isZero();
            // the neighbours keep their bytes
            byte[] before = Arrays.copyOf(data, (int) (5 * PAGE));
            assertThat(map.read(0, (int) (5 * PAGE))).isEqualTo(before);
            assertThat(map.read(6 * PAGE, (int) (10 * PAGE))).isEqualTo(Arrays.copyOfRange(data, (int) (6 * PAGE), data.length));
            // punching clears the mark; the page is a hole, reads zero, and takes writes again
            m.punchHole(5 * PAGE, PAGE);
            assertThat(m.isPoisoned(5 * PAGE)).isFalse();
            assertThat(m.poisonedPages()).isEmpty();
            assertThat(map.read(5 * PAGE, (int) PAGE)).containsOnly(0);
            map.write(5 * PAGE, new byte[] {42});
            assertThat(map.read(5 * PAGE, 1)).containsExactly(42);
            lease.close();
        }
    }

    @Test
    void populateIntoAPoisonedPrivatePageIsEhwpoison() {
        try (GuestMemory m = GuestMemory.create(8 * PAGE, Flag.MMAP.bit(), Backing.MEMFD);
                Binding b = m.bind(new Owner() { }, 0, 8 * PAGE);
                Arena arena = Arena.ofConfined()) {
            MemorySegment src = arena.allocate(2 * PAGE);
            src.fill((byte) 0x5a);
            b.populate(0, src, null);
            assertThat(m.reportMemoryFailure(PAGE)).isTrue();
            MemorySegment other = arena.allocate(2 * PAGE);
            other.fill((byte) 0x11);
            assertRefused(() -> b.populate(0, other, null), Errno.EHWPOISON);
            assertThat(b.pages().get(ValueLayout.JAVA_BYTE, 0)).isEqualTo((byte) 0x5a);
            // converting the healthy page alone still works
            m.convert(0, PAGE, Attribute.SHARED, Content.PRESERVE);
            assertThat(m.attribute(0)).isEqualTo(Attribute.SHARED);
            assertThat(m.attribute(PAGE)).isEqualTo(Attribute.PRIVATE);
        }
    }

    @Test
    void poisonOnAHugePagePieceIsPageGranularAndPunchingThePieceClearsIt() {
        assumeThat(Backing.HUGETLB_2M.isAvailable()).isTrue();
        try (GuestMemory m = GuestMemory.create(HUGE, FLAGS, Backing.HUGETLB_2M); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 29);
            map.write(0, data);
            assertThat(m.reportMemoryFailure(7 * PAGE)).isTrue();
            assertThat(m.poisonedPages()).containsExactly(7 * PAGE);
            assertThat(map.read(8 * PAGE, (int) PAGE)).isEqualTo(Arrays.copyOfRange(data, (int) (8 * PAGE), (int) (9 * PAGE)));
            PunchResult r = m.punch(7 * PAGE, PAGE);
            assertThat(r).isEqualTo(new PunchResult(0, PAGE));
            assertThat(m.isPoisoned(7 * PAGE)).isFalse();
            assertThat(map.read(7 * PAGE, (int) PAGE)).containsOnly(0);
            data = Arrays.copyOf(data, data.length);
            Arrays.fill(data, (int) (7 * PAGE), (int) (8 * PAGE), (byte) 0);
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
        }
    }

    @Test
    void snapshotOfAFileWithAPoisonedPageNeverCarriesItsBytesSilently() throws Exception {
        try (GuestMemory m = GuestMemory.create(8 * PAGE, FLAGS, Backing.MEMFD);
                Binding b = m.bind(new Owner() { }, 0, 8 * PAGE)) {
            try (HostMapping map = m.map(0, m.size())) {
                map.write(0, pattern((int) m.size(), 31));
            }
            m.reportMemoryFailure(3 * PAGE);
            var key = new SecretKeySpec(new byte[32], "AES");
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            Throwable failure = null;
            try {
                Snapshot.write(b, key, out);
            } catch (GuestMemoryException e) {
                failure = e;
            }
            if (failure != null) {
                assertThat(((GuestMemoryException) failure).errno()).isEqualTo(Errno.EHWPOISON);
                assertThat(m.isPoisoned(3 * PAGE)).isTrue();
                return;
            }
            // written: the restored file must not present the failed page as good data
            try (GuestMemory target = GuestMemory.create(8 * PAGE, FLAGS, Backing.MEMFD);
                    Binding tb = target.bind(new Owner() { }, 0, 8 * PAGE)) {
                Snapshot.restore(tb, key, new java.io.ByteArrayInputStream(out.toByteArray()), new Snapshot.ReplayGuard());
                boolean flagged = target.isPoisoned(3 * PAGE);
                byte[] got = null;
                if (!flagged) {
                    try (HostMapping tmap = target.map(0, target.size())) {
                        got = tmap.read(3 * PAGE, (int) PAGE);
                    }
                }
                byte[] original = Arrays.copyOfRange(pattern((int) m.size(), 31), (int) (3 * PAGE), (int) (4 * PAGE));
                assertThat(flagged || !Arrays.equals(got, original) || got == null)
                        .as("restored a poisoned page's bytes as if healthy").isTrue();
            }
        }
    }

    @Test
    void reportRacingPunchAndConvertLeavesAConsistentFile() throws Exception {
        long pages = 64;
        try (GuestMemory m = GuestMemory.create(pages * PAGE, FLAGS, Backing.MEMFD)) {
            m.pinWait(Duration.ofMillis(1));
            m.allocate(0, m.size());
            AtomicBoolean stop = new AtomicBoolean();
            ConcurrentLinkedQueue<Throwable> unexpected = new ConcurrentLinkedQueue<>();
            Set<Errno> documented = Set.of(Errno.EINVAL, Errno.EHWPOISON, Errno.EAGAIN);
            CountDownLatch start = new CountDownLatch(1);
            List<Thread> threads = new ArrayList<>();
            for (int t = 0; t < 3; t++) {
                int kind = t;
                threads.add(Thread.ofPlatform().start(() -> {
                    SplittableRandom random = new SplittableRandom(kind * 7919L + 1);
                    try {
                        start.await();
                        while (!stop.get()) {
                            long page = random.nextLong(pages);
                            long len = 1 + random.nextLong(Math.min(8, pages - page));
                            try {
                                switch (kind) {
                                    case 0 -> m.reportMemoryFailure(page * PAGE);
                                    case 1 -> {
                                        m.punchHole(page * PAGE, len * PAGE);
                                        m.allocate(page * PAGE, len * PAGE);
                                    }
                                    default -> m.convert(page * PAGE, len * PAGE,
                                            random.nextBoolean() ? Attribute.PRIVATE : Attribute.SHARED, Content.PRESERVE);
                                }
                            } catch (GuestMemoryException e) {
                                if (!documented.contains(e.errno())) {
                                    unexpected.add(e);
                                }
                            }
                        }
                    } catch (Throwable e) {
                        unexpected.add(e);
                    }
                }));
            }
            start.countDown();
            Thread.sleep(1500);
            stop.set(true);
            for (Thread t : threads) {
                t.join(20_000);
                assertThat(t.isAlive()).isFalse();
            }
            assertThat(unexpected).isEmpty();
            // every mark is on a page inside the file, in order, and isPoisoned agrees
            List<Long> marks = m.poisonedPages();
            assertThat(marks).isSorted().doesNotHaveDuplicates();
            for (long p = 0; p < pages; p++) {
                assertThat(m.isPoisoned(p * PAGE)).isEqualTo(marks.contains(p * PAGE));
            }
            // a conversion over a marked page names the first one
            if (!marks.isEmpty()) {
                long first = marks.getFirst();
                assertThatThrownBy(() -> m.convert(0, m.size(), Attribute.SHARED, Content.PRESERVE))
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                            assertThat(e.errno()).isEqualTo(Errno.EHWPOISON);
                            assertThat(e.errorOffset()).isEqualTo(first);
                        });
            }
            m.punchHole(0, m.size());
            assertThat(m.poisonedPages()).isEmpty();
            m.convert(0, m.size(), Attribute.SHARED, Content.ZERO);
            try (HostMapping map = m.map(0, m.size())) {
                assertThat(map.read(0, (int) m.size())).containsOnly(0);
            }
        }
    }

    @Test
    void reportFromAConversionCallbackIsEdeadlkOrWorksButNeverHangs() {
        try (GuestMemory m = GuestMemory.create(8 * PAGE, FLAGS, Backing.MEMFD)) {
            m.allocate(0, m.size());
            List<Throwable> seen = new ArrayList<>();
            Owner reporter = new Owner() {
                @Override
                public void prepareInaccessible(Binding binding, long offset, long length, Content content) {
                    try {
                        binding.memory().reportMemoryFailure(offset);
                    } catch (GuestMemoryException e) {
                        seen.add(e);
                    }
                }
            };
            try (Binding b = m.bind(reporter, 0, m.size())) {
                assertThat(b.length()).isEqualTo(m.size());
                try {
                    m.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
                } catch (GuestMemoryException e) {
                    seen.add(e);
                }
            }
            // documented: EDEADLK from an owner callback of a conversion
            assertThat(seen).isNotEmpty();
            assertThat(seen.getFirst()).isInstanceOfSatisfying(GuestMemoryException.class,
                    e -> assertThat(e.errno()).isEqualTo(Errno.EDEADLK));
            assertThat(m.poisonedPages()).isEmpty();
        }
    }
}
