package dev.guestmemfd;

import dev.guestmemfd.testing.ForwardingPageSource;
import static dev.guestmemfd.Attack2Fixture.HEADER;
import static dev.guestmemfd.Attack2Fixture.PAGE;
import static dev.guestmemfd.Attack2Fixture.SIZE;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import javax.crypto.SecretKey;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import dev.guestmemfd.Attack2Fixture.Rec;

/**
 * {@link PageSource#open} on altered snapshot files, and {@link LazyRestore} under fire: closes
 * of the restore or of its file from other threads while host code waits on a fetch, and
 * conversions, punches, memory failures and snapshots of pages not fetched yet. Written from the
 * public contract alone.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class Attack2LazyTest {
    static SecretKey key;
    static GuestMemory source;
    static byte[] good;
    static List<Rec> recs;

    @TempDir
    Path dir;

    @BeforeAll
    static void makeStream() throws IOException {
        key = Attack2Fixture.key();
        source = Attack2Fixture.source();
        good = Attack2Fixture.stream(source, key);
        recs = Attack2Fixture.records(good);
    }

    @AfterAll
    static void closeSource() {
        source.close();
    }

    Path file(byte[] bytes) throws IOException {
        Path f = Files.createTempFile(dir, "snap", ".gmem");
        Files.write(f, bytes);
        return f;
    }

    /** A source whose reads wait until the gate opens (or it is closed): fetches that hang on a slow disk or network. */
    static final class GatedSource extends ForwardingPageSource {
        final CountDownLatch gate = new CountDownLatch(1);
        final CountDownLatch reading = new CountDownLatch(1);
        final AtomicInteger reads = new AtomicInteger();

        GatedSource(PageSource inner) {
            super(inner);
        }

        void open() {
            gate.countDown();
        }

        @Override
        public void read(Extent extent, MemorySegment into) throws IOException {
            reading.countDown();
            try {
                if (!gate.await(30, TimeUnit.SECONDS)) {
                    throw new IOException("the gate never opened");
                }
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
            reads.incrementAndGet();
            inner.read(extent, into);
        }

        @Override
        public void close() throws IOException {
            gate.countDown();
            inner.close();
        }
    }

    GatedSource gated() throws IOException {
        return new GatedSource(PageSource.open(file(good), key, new Snapshot.ReplayGuard()));
    }

    static Errno errnoOf(Throwable t) {
        Throwable c = t;
        while (c != null && !(c instanceof GuestMemoryException)) {
            c = c.getCause();
        }
        assertThat(c).as("a GuestMemoryException in " + t).isNotNull();
        return ((GuestMemoryException) c).errno();
    }

    @Test
    void theGoodFileRestoresLazily() throws Exception {
        try (GuestMemory target = Attack2Fixture.newFile();
                LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)),
                        PageSource.open(file(good), key, new Snapshot.ReplayGuard()), s -> {
                        })) {
            assertThat(r.await(Duration.ofSeconds(30))).isTrue();
            Attack2Fixture.assertRestored(target);
        }
    }

    @Test
    void openRefusesCutMalformedAndExtendedFiles() throws IOException {
        Map<String, byte[]> bad = new LinkedHashMap<>();
        bad.put("empty", new byte[0]);
        bad.put("header only", Arrays.copyOf(good, HEADER));
        bad.put("cut in the end record", Arrays.copyOf(good, good.length - 1));
        bad.put("cut in a record header", Arrays.copyOf(good, recs.get(2).start() + 5));
        bad.put("cut in a record body", Arrays.copyOf(good, recs.get(0).end() - 1));
        bad.put("one byte more", Attack2Fixture.concat(good, new byte[1]));
        bad.put("a page more", Attack2Fixture.concat(good, new byte[(int) PAGE]));
        bad.put("magic", Attack2Fixture.flip(good, 0));
        bad.put("version", Attack2Fixture.flip(good, 11));
        byte[] page = new byte[(int) PAGE];
        bad.put("a shared page at the end", Attack2Fixture.insert(good, HEADER, Attack2Fixture.record(1, SIZE, (int) PAGE, page)));
        bad.put("a shared page at -4096", Attack2Fixture.insert(good, HEADER, Attack2Fixture.record(1, -PAGE, (int) PAGE, page)));
        bad.put("a shared page unaligned", Attack2Fixture.insert(good, HEADER, Attack2Fixture.record(1, 7, (int) PAGE, page)));
        bad.put("a shared record of 2^32-1 bytes", Attack2Fixture.insert(good, HEADER, Attack2Fixture.record(1, 0, -1, page)));
        bad.put("a hole of 2^32-1 pages", Attack2Fixture.insert(good, HEADER, Attack2Fixture.record(4, 0, -1, new byte[0])));
        bad.put("a hole whose end overflows", Attack2Fixture.insert(good, HEADER,
                Attack2Fixture.record(3, Long.MAX_VALUE & -PAGE, 0x7fff_ffff, new byte[0])));
        bad.put("a private hole past the end", Attack2Fixture.insert(good, HEADER, Attack2Fixture.record(3, SIZE, 1, new byte[0])));
        bad.put("kind 7", Attack2Fixture.insert(good, HEADER, Attack2Fixture.record(7, 0, 1, new byte[0])));
        bad.put("a poisoned page nobody named", Attack2Fixture.insert(good, HEADER, Attack2Fixture.record(6, 0, 1, new byte[0])));
        bad.put("a flipped record count", Attack2Fixture.flip(good, recs.getLast().start() + 8));
        for (var e : bad.entrySet()) {
            Path f = file(e.getValue());
            Throwable t = catchThrowable(() -> {
                try (GuestMemory target = Attack2Fixture.newFile()) {
                    PageSource s = PageSource.open(f, key, new Snapshot.ReplayGuard());
                    // what open cannot see, the restore must: it fails loudly before it completes
                    try (LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), s, x -> {
                    })) {
                        r.await(Duration.ofSeconds(20));
                    }
                }
            });
            assertThat(t).as(e.getKey()).isNotNull();
            assertThat(errnoOf(t)).as(e.getKey() + ": " + t).isEqualTo(Errno.EBADMSG);
        }
    }

    /** A flipped byte open cannot see (in page bytes, a tag or the digest) fails the restore loudly. */
    @Test
    void flippedPageBytesTagsAndDigestFailTheRestoreLoudly() throws Exception {
        Map<String, Integer> at = new LinkedHashMap<>();
        for (Rec r : recs) {
            if (r.kind() == 1) {
                at.putIfAbsent("shared body", r.headerEnd() + 10);
            } else if (r.kind() == 2) {
                at.putIfAbsent("private body", r.headerEnd() + 10);
                at.putIfAbsent("private tag", r.end() - 1);
            }
        }
        at.put("sealed digest", good.length - 30);
        at.put("digest tag", good.length - 1);
        for (var e : at.entrySet()) {
            Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
            Path f = file(Attack2Fixture.flip(good, e.getValue()));
            try (GuestMemory target = Attack2Fixture.newFile()) {
                LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), PageSource.open(f, key, guard), x -> {
                });
                List<Throwable> seen = new ArrayList<>();
                CountDownLatch failed = new CountDownLatch(1);
                r.onFailure(c -> {
                    seen.add(c);
                    failed.countDown();
                });
                Throwable t = catchThrowable(() -> r.await(Duration.ofSeconds(20)));
                assertThat(t).as(e.getKey()).isNotNull();
                assertThat(errnoOf(t)).as(e.getKey()).isEqualTo(Errno.EBADMSG);
                assertThat(failed.await(5, TimeUnit.SECONDS)).as(e.getKey() + ": the failure listener ran").isTrue();
                assertThat(r.isComplete()).isFalse();
                assertThat(r.failure()).isPresent();
                // every later host access through the library fails with EBADMSG
                try (HostMapping m = target.map(0, SIZE)) {
                    Throwable read = catchThrowable(() -> m.read(0, (int) PAGE));
                    assertThat(read).as(e.getKey() + ": host read after the failure").isInstanceOf(GuestMemoryException.class);
                    assertThat(((GuestMemoryException) read).errno()).as(e.getKey()).isEqualTo(Errno.EBADMSG);
                }
                Throwable pin = catchThrowable(() -> target.pin(0, PAGE).close());
                assertThat(pin).as(e.getKey() + ": pin after the failure").isInstanceOf(GuestMemoryException.class);
                r.close();
            }
            // the refused file did not use up the stream: the genuine one restores through the same guard
            try (GuestMemory target = Attack2Fixture.newFile();
                    LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), PageSource.open(file(good), key, guard),
                            x -> {
                            })) {
                assertThat(r.await(Duration.ofSeconds(20))).as(e.getKey() + ": then the genuine file").isTrue();
                Attack2Fixture.assertRestored(target);
            }
        }
    }

    @Test
    void aStreamOpenedOnceCannotBeOpenedAgainThroughTheSameGuard() throws Exception {
        Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
        Path f = file(good);
        try (GuestMemory target = Attack2Fixture.newFile();
                LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), PageSource.open(f, key, guard), x -> {
                })) {
            assertThat(r.await(Duration.ofSeconds(20))).isTrue();
        }
        assertThatThrownBy(() -> PageSource.open(f, key, guard)).isInstanceOfSatisfying(GuestMemoryException.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.EALREADY));
        try (GuestMemory target = Attack2Fixture.newFile()) {
            assertThatThrownBy(() -> Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(good), guard))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EALREADY));
            assertThat(target.pageCounts().allocated()).isZero();
        }
    }

    @Test
    void startRefusesWrongTargetsAndLeavesThemAsTheyWere() throws Exception {
        try (GuestMemory bigger = GuestMemory.create(2 * SIZE, EnumSet.of(Flag.MMAP, Flag.INIT_SHARED))) {
            Binding b = bigger.bind(Attack2Fixture.OWNER, 0, 2 * SIZE);
            List<PageRun> before = bigger.pageRuns();
            PageSource s = PageSource.open(file(good), key, new Snapshot.ReplayGuard());
            Throwable t = catchThrowable(() -> LazyRestore.start(List.of(b), s, x -> {
            }));
            assertThat(errnoOf(t)).isEqualTo(Errno.EINVAL);
            assertThat(bigger.pageRuns()).isEqualTo(before);
            s.close();
        }
        try (GuestMemory used = Attack2Fixture.newFile()) {
            try (HostMapping m = used.map(0, SIZE)) {
                m.write(PAGE, new byte[] {9});
            }
            List<PageRun> before = used.pageRuns();
            PageSource s = PageSource.open(file(good), key, new Snapshot.ReplayGuard());
            Throwable t = catchThrowable(() -> LazyRestore.start(List.of(Attack2Fixture.bindingOf(used)), s, x -> {
            }));
            assertThat(errnoOf(t)).isEqualTo(Errno.EINVAL);
            assertThat(used.pageRuns()).isEqualTo(before);
            try (HostMapping m = used.map(0, SIZE)) {
                assertThat(m.read(PAGE, 1)[0]).isEqualTo((byte) 9);
            }
            s.close();
        }
        try (GuestMemory target = Attack2Fixture.newFile()) {
            Binding b = Attack2Fixture.bindingOf(target);
            assertThat(errnoOf(catchThrowable(() -> LazyRestore.start(List.of(b), null, x -> {
            })))).isEqualTo(Errno.EINVAL);
            PageSource s = PageSource.open(file(good), key, new Snapshot.ReplayGuard());
            assertThat(errnoOf(catchThrowable(() -> LazyRestore.start(List.of(b), s, null)))).isEqualTo(Errno.EINVAL);
            assertThat(errnoOf(catchThrowable(() -> LazyRestore.start(List.of(), s, x -> {
            })))).isEqualTo(Errno.EINVAL);
            assertThat(target.pageCounts().allocated()).isZero();
            s.close();
        }
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(null, key, new Snapshot.ReplayGuard())))).isEqualTo(Errno.EINVAL);
        Path f = file(good);
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(f, null, new Snapshot.ReplayGuard())))).isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(f, key, null)))).isEqualTo(Errno.EINVAL);
    }

    /**
     * A host read waits on a fetch that hangs (a stalled disk or peer); the restore is closed
     * from another thread. Closing must let go of the source (whose reads then fail), so the
     * reader wakes with EIO and close returns: neither may wait for the stalled read to return
     * by itself, which it may never do. Bounds, not speeds: 20 s each, where the stalled read
     * gives up only after 30. (Observed: close returns after about 10 s, the read then wakes with EIO.)
     */
    @Test
    void closingTheRestoreWakesAHostReadWaitingOnAFetchWithEio() throws Exception {
        try (GuestMemory target = Attack2Fixture.newFile()) {
            GatedSource s = gated();
            LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), s, x -> {
            });
            HostMapping m = target.map(0, SIZE);
            CompletableFuture<byte[]> read = CompletableFuture.supplyAsync(() -> m.read(0, (int) PAGE), Attack2Fixture.THREADS);
            assertThat(s.reading.await(20, TimeUnit.SECONDS)).isTrue();
            Thread.sleep(100);
            CompletableFuture<Void> close = CompletableFuture.runAsync(r::close, Attack2Fixture.THREADS);
            Throwable t = catchThrowable(() -> read.get(20, TimeUnit.SECONDS));
            assertThat(t).as("the host read waiting on the page").isNotInstanceOf(java.util.concurrent.TimeoutException.class);
            if (t != null) {
                assertThat(errnoOf(t)).as(t.toString()).isEqualTo(Errno.EIO);
            } else {
                // the read won the race: it must hold the page's true bytes, never a zero-filled page
                assertThat(read.get()[0]).isEqualTo(Attack2Fixture.fill(0));
            }
            Throwable c = catchThrowable(() -> close.get(20, TimeUnit.SECONDS));
            assertThat(c).as("close of a restore whose source stalls").isNull();
            assertThat(r.isComplete()).isFalse();
            assertThat(r.failure()).isPresent();
            assertThat(errnoOf(catchThrowable(() -> m.read(6 * PAGE, 10)))).isEqualTo(Errno.EIO);
            assertThat(errnoOf(catchThrowable(() -> r.await(Duration.ofSeconds(1))))).isEqualTo(Errno.EIO);
            r.close();
            m.close();
        }
    }

    /** A host read waits on a fetch that hangs; the file itself is closed from another thread. */
    @Test
    void closingTheFileWhileAHostReadWaitsOnAFetchNeitherHangsNorCrashes() throws Exception {
        GuestMemory target = Attack2Fixture.newFile();
        GatedSource s = gated();
        LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), s, x -> {
        });
        HostMapping m = target.map(0, SIZE);
        CompletableFuture<byte[]> read = CompletableFuture.supplyAsync(() -> m.read(PAGE, (int) PAGE), Attack2Fixture.THREADS);
        assertThat(s.reading.await(20, TimeUnit.SECONDS)).isTrue();
        CompletableFuture<Void> close = CompletableFuture.runAsync(target::close, Attack2Fixture.THREADS);
        Thread.sleep(200);
        s.open();
        close.get(30, TimeUnit.SECONDS);
        Throwable t = catchThrowable(() -> read.get(30, TimeUnit.SECONDS));
        if (t != null) {
            assertThat(errnoOf(t)).as(t.toString()).isIn(Errno.EBADF, Errno.EIO);
        } else {
            assertThat(read.get()[0]).isEqualTo(Attack2Fixture.fill(1));
        }
        assertThat(target.isClosed()).isTrue();
        CompletableFuture.runAsync(r::close, Attack2Fixture.THREADS).get(30, TimeUnit.SECONDS);
        Throwable await = catchThrowable(() -> r.await(Duration.ofSeconds(5)));
        assertThat(r.isComplete() || await != null || r.failure().isPresent()).as("a restore of a closed file does not complete quietly")
                .isTrue();
    }

    /** Conversions, punches and memory failures of pages whose fetch is still waiting. */
    @Test
    void convertPunchAndFailPagesNotFetchedYet() throws Exception {
        try (GuestMemory target = Attack2Fixture.newFile()) {
            GatedSource s = gated();
            LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), s, x -> {
            });
            // the layout is there before any byte
            assertThat(target.attribute(3 * PAGE)).isEqualTo(Attribute.PRIVATE);
            assertThat(target.attribute(0)).isEqualTo(Attribute.SHARED);
            CompletableFuture<Void> ops = CompletableFuture.runAsync(() -> {
                target.punchHole(0, PAGE); // shared page 0: fetched first or not, it ends a hole
                target.convert(3 * PAGE, PAGE, Attribute.SHARED, Content.PRESERVE); // private page 3 handed over
                target.reportMemoryFailure(6 * PAGE); // shared page 6 fails
                target.convert(4 * PAGE, PAGE, Attribute.SHARED, Content.ZERO);
            }, Attack2Fixture.THREADS);
            assertThat(s.reading.await(20, TimeUnit.SECONDS)).isTrue();
            Thread.sleep(100);
            s.open();
            ops.get(30, TimeUnit.SECONDS);
            assertThat(r.await(Duration.ofSeconds(30))).isTrue();
            assertThat(target.isPoisoned(6 * PAGE)).isTrue();
            try (HostMapping m = target.map(0, 6 * PAGE)) {
                assertThat(m.read(0, (int) PAGE)).containsOnly(0);
                assertThat(m.read(3 * PAGE, (int) PAGE)).containsOnly(Attack2Fixture.fill(3));
                assertThat(m.read(4 * PAGE, (int) PAGE)).containsOnly(0);
                assertThat(m.read(PAGE, (int) PAGE)).containsOnly(Attack2Fixture.fill(1));
            }
            assertThat(target.poisonedPages()).containsExactly(6 * PAGE);
            r.close();
        }
    }

    /** A snapshot of a file still being restored lazily, its fetches hanging for a while. */
    @Test
    void aSnapshotOfAFileStillRestoringLazilyHoldsTheRestoredBytes() throws Exception {
        try (GuestMemory target = Attack2Fixture.newFile()) {
            GatedSource s = gated();
            LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), s, x -> {
            });
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            CompletableFuture<Long> write = CompletableFuture.supplyAsync(() -> {
                try {
                    return Snapshot.write(Attack2Fixture.bindingOf(target), key, out);
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, Attack2Fixture.THREADS);
            Thread.sleep(200);
            System.gc(); // a safepoint while the writer may wait on a page
            s.open();
            write.get(30, TimeUnit.SECONDS);
            assertThat(r.await(Duration.ofSeconds(30))).isTrue();
            try (GuestMemory third = Attack2Fixture.newFile()) {
                Snapshot.restore(Attack2Fixture.bindingOf(third), key, new ByteArrayInputStream(out.toByteArray()), new Snapshot.ReplayGuard());
                Attack2Fixture.assertRestored(third);
            }
            r.close();
        }
    }

    @Test
    void concurrentClosesOfTheRestoreAreIdempotent() throws Exception {
        try (GuestMemory target = Attack2Fixture.newFile()) {
            GatedSource s = gated();
            LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), s, x -> {
            });
            List<CompletableFuture<Void>> closes = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                closes.add(CompletableFuture.runAsync(r::close, Attack2Fixture.THREADS));
            }
            for (CompletableFuture<Void> c : closes) {
                c.get(30, TimeUnit.SECONDS);
            }
            assertThat(r.failure()).isPresent();
            assertThat(errnoOf(r.failure().get())).isEqualTo(Errno.EIO);
            // every later library access to the file fails with EIO, a punch of a lost page too
            assertThat(errnoOf(catchThrowable(() -> target.punchHole(0, PAGE)))).isEqualTo(Errno.EIO);
            try (HostMapping m = target.map(0, SIZE)) {
                assertThat(errnoOf(catchThrowable(() -> m.read(0, 1)))).isEqualTo(Errno.EIO);
            }
        }
    }

    @Test
    void fetchWithHostileRangesNeitherHangsNorCrashes() throws Exception {
        try (GuestMemory target = Attack2Fixture.newFile();
                LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)),
                        PageSource.open(file(good), key, new Snapshot.ReplayGuard()), x -> {
                        })) {
            long[][] ranges = {{-PAGE, PAGE}, {0, -1}, {SIZE, PAGE}, {Long.MAX_VALUE, Long.MAX_VALUE}, {SIZE - PAGE, Long.MAX_VALUE},
                {1, 1}, {0, 0}};
            for (long[] range : ranges) {
                Throwable t = catchThrowable(() -> r.fetch(range[0], range[1]));
                if (t != null) {
                    assertThat(t).as(Arrays.toString(range)).isInstanceOf(GuestMemoryException.class);
                }
            }
            assertThat(r.await(Duration.ofSeconds(30))).isTrue();
            Attack2Fixture.assertRestored(target);
        }
    }
}
