package dev.guestmemfd;

import static dev.guestmemfd.Attack2Fixture.PAGE;
import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import javax.crypto.SecretKey;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Races of host code through the library against the close of a lazy restore or of its file:
 * every host read of a page with bytes returns the page's true bytes or fails with the
 * documented errno; none returns a zero-filled page, none hangs, the JVM does not crash.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class Attack2LazyRaceTest {
    static SecretKey key;
    static GuestMemory source;
    static byte[] good;

    @TempDir
    static Path dir;

    /** A file big enough (16 MiB, every page shared with bytes) that the pull is still running when the close comes. */
    static final long BIG = 4096 * PAGE;

    static byte fill(long page) {
        return (byte) (1 + page % 251);
    }

    @BeforeAll
    static void makeStream() throws IOException {
        key = Attack2Fixture.key();
        source = GuestMemory.create(BIG, java.util.EnumSet.of(Flag.MMAP, Flag.INIT_SHARED));
        try (HostMapping m = source.map(0, BIG)) {
            byte[] page = new byte[(int) PAGE];
            for (long p = 0; p < BIG / PAGE; p++) {
                java.util.Arrays.fill(page, fill(p));
                m.write(p * PAGE, page);
            }
        }
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        Snapshot.write(source.bind(Attack2Fixture.OWNER, 0, BIG), key, out);
        good = out.toByteArray();
    }

    static final java.util.concurrent.atomic.AtomicInteger closedIncomplete = new java.util.concurrent.atomic.AtomicInteger();

    @AfterAll
    static void closeSource() {
        source.close();
    }

    /** Host threads read, lease and pin the shared pages while the restore, or the file, is closed under them. */
    void race(boolean closeTheFile, long seed) throws Exception {
        Random rnd = new Random(seed);
        Path f = Files.createTempFile(dir, "snap", ".gmem");
        Files.write(f, good);
        GuestMemory target = GuestMemory.create(BIG, java.util.EnumSet.of(Flag.MMAP, Flag.INIT_SHARED));
        LazyRestore r = LazyRestore.start(List.of(target.bind(Attack2Fixture.OWNER, 0, BIG)), PageSource.open(f, key, new Snapshot.ReplayGuard()),
                x -> {
                });
        ConcurrentLinkedQueue<String> wrong = new ConcurrentLinkedQueue<>();
        CountDownLatch go = new CountDownLatch(1);
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < 3; t++) {
            int kind = t;
            Thread th = Thread.ofPlatform().start(() -> {
                try {
                    go.await();
                    for (int i = 0; i < 20; i++) {
                        long p = (BIG / PAGE - 1) - (i * 97L + kind * 13L) % (BIG / PAGE);
                        try (HostMapping m = target.map(0, BIG)) {
                            switch (kind) {
                                case 0 -> {
                                    byte[] b = m.read(p * PAGE, (int) PAGE);
                                    for (byte x : b) {
                                        if (x != fill(p)) {
                                            wrong.add("read of page " + p + " returned " + x);
                                            break;
                                        }
                                    }
                                }
                                case 1 -> {
                                    try (Lease l = m.lease(p * PAGE, PAGE)) {
                                        byte x = l.segment().get(java.lang.foreign.ValueLayout.JAVA_BYTE, PAGE - 1);
                                        if (x != fill(p)) {
                                            wrong.add("lease of page " + p + " saw " + x);
                                        }
                                    }
                                }
                                default -> target.pin(p * PAGE, PAGE).close();
                            }
                        } catch (GuestMemoryException e) {
                            if (!(e.errno() == Errno.EIO || e.errno() == Errno.EBADF)) {
                                wrong.add("page " + p + ": " + e);
                            }
                        }
                    }
                } catch (Throwable e) {
                    wrong.add("thread " + kind + ": " + e);
                }
            });
            threads.add(th);
        }
        go.countDown();
        Thread.sleep(rnd.nextInt(3));
        if (!r.isComplete()) {
            closedIncomplete.incrementAndGet();
        }
        if (closeTheFile) {
            target.close();
        } else {
            r.close();
        }
        for (Thread th : threads) {
            th.join(TimeUnit.SECONDS.toMillis(30));
            assertThat(th.isAlive()).as("a host thread still blocked 30 s after the close").isFalse();
        }
        r.close();
        if (!closeTheFile) {
            assertThat(r.isComplete() || r.failure().isPresent()).isTrue();
        }
        target.close();
        assertThat(wrong).as("seed " + seed).isEmpty();
    }

    @Test
    void closingTheRestoreUnderHostReadsLeasesAndPins() throws Exception {
        for (long seed = 0; seed < 25; seed++) {
            race(false, seed);
        }
        System.err.println("closed before complete: " + closedIncomplete.get() + " of 25");
    }

    @Test
    void closingTheFileUnderHostReadsLeasesAndPinsDuringALazyRestore() throws Exception {
        for (long seed = 0; seed < 25; seed++) {
            race(true, seed);
        }
    }

    @Test
    void aCompletedRestoreIsUnaffectedByItsClose() throws Exception {
        Path f = Files.createTempFile(dir, "snap", ".gmem");
        Files.write(f, good);
        try (GuestMemory target = GuestMemory.create(BIG, java.util.EnumSet.of(Flag.MMAP, Flag.INIT_SHARED))) {
            LazyRestore r = LazyRestore.start(List.of(target.bind(Attack2Fixture.OWNER, 0, BIG)),
                    PageSource.open(f, key, new Snapshot.ReplayGuard()), x -> {
                    });
            assertThat(r.await(Duration.ofSeconds(60))).isTrue();
            r.close();
            r.close();
            assertThat(r.failure()).isEmpty();
            try (HostMapping m = target.map(0, BIG)) {
                for (long p = 0; p < BIG / PAGE; p += 37) {
                    assertThat(m.read(p * PAGE, (int) PAGE)).as("page " + p).containsOnly(fill(p));
                }
            }
        }
    }
}
