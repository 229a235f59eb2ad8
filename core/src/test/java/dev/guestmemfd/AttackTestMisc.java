package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assumptions.assumeThat;

import java.io.OutputStream;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import javax.crypto.SecretKey;
import javax.crypto.spec.SecretKeySpec;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * More attacks from the Javadoc: owner refusals and their error offsets, pin waits, pools of
 * odd sizes, missing backings, and library calls racing a lazy restore over pages not yet
 * fetched (the restore must never overwrite what the call did).
 */
@Timeout(value = 90, unit = TimeUnit.SECONDS)
class AttackTestMisc {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
    private static final SecretKey KEY = new SecretKeySpec(new byte[32], "AES");

    @TempDir
    Path dir;

    private static void assertRefused(Runnable call, Errno errno) {
        assertThatThrownBy(call::run).isInstanceOfSatisfying(GuestMemoryException.class,
                e -> assertThat(e.errno()).isEqualTo(errno));
    }

    @Test
    void aSecondOwnerRefusingRollsBackTheFirstAndNamesItsPage() {
        try (GuestMemory m = GuestMemory.create(16 * PAGE, FLAGS, Backing.MEMFD); HostMapping map = m.map(0, m.size())) {
            byte[] data = new byte[(int) m.size()];
            Arrays.fill(data, (byte) 0x31);
            map.write(0, data);
            List<String> calls = new ArrayList<>();
            Owner accepting = new Owner() {
                @Override
                public void prepareInaccessible(Binding binding, long offset, long length, Content content) {
                    calls.add("prepare " + offset);
                }

                @Override
                public void rollback(Binding binding, long offset, long length, Attribute attribute) {
                    calls.add("rollback " + offset + " " + attribute);
                }
            };
            Owner refusing = new Owner() {
                @Override
                public void prepareInaccessible(Binding binding, long offset, long length, Content content) throws OwnerRefusal {
                    throw new OwnerRefusal(offset + PAGE, "attack: refuses one page in");
                }
            };
            try (Binding a = m.bind(accepting, 0, 8 * PAGE); Binding b = m.bind(refusing, 8 * PAGE, 8 * PAGE)) {
                assertThat(a.isClosed() || b.isClosed()).isFalse();
                assertThatThrownBy(() -> m.convert(4 * PAGE, 8 * PAGE, Attribute.PRIVATE, Content.PRESERVE))
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                            assertThat(e.errno()).isEqualTo(Errno.EPERM);
                            assertThat(e.errorOffset()).isEqualTo(9 * PAGE);
                        });
                assertThat(calls).containsExactly("prepare " + 4 * PAGE, "rollback " + 4 * PAGE + " SHARED");
                for (long p = 0; p < 16; p++) {
                    assertThat(m.attribute(p * PAGE)).isEqualTo(Attribute.SHARED);
                }
                assertThat(m.conversions()).isZero();
                assertThat(map.read(0, (int) m.size())).isEqualTo(data);
            }
        }
    }

    @Test
    void pinWaitRefusesNegativeAndOverlongWaits() {
        GuestMemory m = GuestMemory.create(4 * PAGE, FLAGS, Backing.MEMFD);
        {
            assertRefused(() -> m.pinWait(Duration.ofNanos(-1)), Errno.EINVAL);
            assertRefused(() -> m.pinWait(GuestMemory.MAX_PIN_WAIT.plusNanos(1)), Errno.EINVAL);
            assertRefused(() -> m.pinWait(Duration.ofSeconds(Long.MAX_VALUE)), Errno.EINVAL);
            assertRefused(() -> m.pinWait(Duration.ofSeconds(Long.MIN_VALUE)), Errno.EINVAL);
            assertThatThrownBy(() -> m.pinWait(null)).isInstanceOf(NullPointerException.class);
            m.pinWait(Duration.ZERO);
            m.pinWait(GuestMemory.MAX_PIN_WAIT);
            m.close();
            assertRefused(() -> m.pinWait(Duration.ZERO), Errno.EBADF);
        }
    }

    @Test
    void poolsOfOddSizesAreEmptyNotErrors() {
        for (long size : new long[] {0, -1, 1, 3, PAGE, Long.MAX_VALUE, Long.MIN_VALUE}) {
            assertThat(HugePagePool.of(size)).as("pool of %d", size).isEmpty();
        }
        assertThat(HugePagePool.all()).isSortedAccordingTo((a, b) -> Long.compare(a.pageSize(), b.pageSize()));
        for (HugePagePool p : HugePagePool.all()) {
            assertThat(p.available()).isBetween(0L, p.free());
        }
    }

    @Test
    void aPoolSizeThatIsNotWholeKibibytesIsEmpty() {
        assumeThat(HugePagePool.of(2L << 20)).isPresent();
        assertThat(HugePagePool.of((2L << 20) + 1)).isEmpty();
        assertThat(HugePagePool.of((2L << 20) + 1023)).isEmpty();
    }

    @Test
    void aBackingTheHostLacksIsEnodevWithItsReason() {
        for (Backing b : Backing.values()) {
            if (!b.isAvailable()) {
                assertThat(b.unavailableReason()).isPresent();
                assertRefused(() -> GuestMemory.create(b.blockSize(), FLAGS, b), Errno.ENODEV);
            } else {
                assertThat(b.unavailableReason()).isEmpty();
            }
        }
    }

    @Test
    void secretBackingZeroesInPlaceAndRefusesPolicy() {
        assumeThat(Backing.SECRET.isAvailable()).isTrue();
        try (GuestMemory m = GuestMemory.create(8 * PAGE, FLAGS | Flag.NO_DIRECT_MAP.bit(), Backing.SECRET);
                HostMapping map = m.map(0, m.size())) {
            map.write(0, new byte[] {1, 2, 3});
            assertThat(m.punch(0, 2 * PAGE)).isEqualTo(new PunchResult(0, 2 * PAGE));
            assertThat(map.read(0, 3)).containsOnly(0);
            assertRefused(() -> m.setPolicy(0, PAGE, MemoryPolicy.DEFAULT), Errno.EOPNOTSUPP);
        }
    }

    /** A snapshot of {@code pages} pages, every page filled with 0x6B, the last 8 private. */
    private Path bigSnapshot(long pages) throws Exception {
        long size = pages * PAGE;
        try (GuestMemory m = GuestMemory.create(size, FLAGS, Backing.MEMFD); Binding b = m.bind(new Owner() { }, 0, size)) {
            try (HostMapping map = m.map(0, size)) {
                byte[] data = new byte[(int) size];
                Arrays.fill(data, (byte) 0x6B);
                map.write(0, data);
            }
            m.convert(size - 8 * PAGE, 8 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            Path file = dir.resolve("big-" + System.nanoTime());
            try (OutputStream out = Files.newOutputStream(file)) {
                Snapshot.write(b, KEY, out);
            }
            return file;
        }
    }

    @Test
    void callsOverPagesNotYetFetchedAreNeverUndoneByTheRestore() throws Exception {
        long pages = 4096;
        long size = pages * PAGE;
        Path file = bigSnapshot(pages);
        try (GuestMemory t = GuestMemory.create(size, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, size);
                LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { })) {
            long zeroedPrivate = size - 4 * PAGE;
            long punched = size - 16 * PAGE;
            long written = size - 12 * PAGE;
            // far from where the pull starts: most likely not fetched yet
            t.convert(zeroedPrivate, PAGE, Attribute.SHARED, Content.ZERO);
            t.punch(punched, PAGE);
            try (HostMapping map = t.map(written, PAGE)) {
                map.write(0, new byte[] {1, 2, 3, 4});
            }
            assertThat(r.await(Duration.ofSeconds(60))).isTrue();
            try (HostMapping map = t.map(0, size)) {
                assertThat(map.read(zeroedPrivate, (int) PAGE)).containsOnly(0);
                assertThat(map.read(punched, (int) PAGE)).containsOnly(0);
                byte[] w = map.read(written, (int) PAGE);
                assertThat(Arrays.copyOf(w, 4)).containsExactly(1, 2, 3, 4);
                assertThat(w[4]).isEqualTo((byte) 0x6B);
                assertThat(map.read(PAGE, 16)).containsOnly((byte) 0x6B);
            }
            assertThat(t.attribute(size - 5 * PAGE)).isEqualTo(Attribute.PRIVATE);
            assertThat(tb.pages().get(ValueLayout.JAVA_BYTE, size - 5 * PAGE)).isEqualTo((byte) 0x6B);
        }
    }

    @Test
    void closingARestoreWhileOtherThreadsReadNeverHangs() throws Exception {
        long pages = 4096;
        long size = pages * PAGE;
        Path file = bigSnapshot(pages);
        try (GuestMemory t = GuestMemory.create(size, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, size);
                HostMapping map = t.map(0, size)) {
            LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { });
            List<CompletableFuture<Void>> readers = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                int start = i;
                readers.add(CompletableFuture.runAsync(() -> {
                    for (long p = pages - 9 - start; p >= 0; p -= 97) {
                        try {
                            byte[] b = map.read(p * PAGE, 8);
                            assertThat(b).containsOnly((byte) 0x6B);
                        } catch (GuestMemoryException e) {
                            assertThat(e.errno()).isIn(Errno.EIO, Errno.EHWPOISON);
                        }
                    }
                }));
            }
            r.close();
            for (CompletableFuture<Void> f : readers) {
                f.get(30, TimeUnit.SECONDS);
            }
            if (!r.isComplete()) {
                assertThat(r.failure()).isPresent();
            }
        }
    }
}
