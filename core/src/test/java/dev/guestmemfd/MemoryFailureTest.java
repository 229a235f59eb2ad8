package dev.guestmemfd;

import static dev.guestmemfd.Errors.assertErrno;
import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.testing.RequiresBacking;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.security.DigestOutputStream;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * {@link GuestMemory#reportMemoryFailure}: a poisoned page refuses every way in with
 * {@code EHWPOISON}, changes nothing when refused, travels in snapshots, and is cleared by a
 * punch only.
 */
@Timeout(120)
class MemoryFailureTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long PAGES = 16;
    static final long SIZE = PAGES * PAGE;
    static final long BAD = 5 * PAGE;

    static GuestMemory create(Backing backing, boolean shared) {
        long flags = Flag.MMAP.bit() | (shared ? Flag.INIT_SHARED.bit() : 0)
                | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
        return GuestMemory.create(SIZE, flags, backing);
    }

    /** Fills every page of a shared file with its own index, through the host. */
    static void fill(GuestMemory m) {
        try (HostMapping host = m.map(0, SIZE)) {
            for (int p = 0; p < PAGES; p++) {
                byte[] page = new byte[(int) PAGE];
                Arrays.fill(page, (byte) (p + 1));
                host.write(p * PAGE, page);
            }
        }
    }

    /** An owner that writes down its invalidations. */
    static final class Recorder implements Owner {
        final List<String> calls = new CopyOnWriteArrayList<>();

        @Override
        public void invalidateBegin(Binding binding, long offset, long length, Invalidation why) {
            calls.add("begin " + why + " " + offset + "+" + length);
        }

        @Override
        public void invalidateEnd(Binding binding, long offset, long length, Invalidation why) {
            calls.add("end " + why + " " + offset + "+" + length);
        }
    }

    @ParameterizedTest
    @EnumSource(Backing.class)
    @RequiresBacking
    void everyHostPathOverAPoisonedPageFailsWithEhwpoisonAndChangesNothing(Backing backing) {
        try (GuestMemory m = create(backing, true)) {
            fill(m);
            HostMapping host = m.map(0, 4 * PAGE);  // a mapping made before the failure, not covering it
            HostMapping over = m.map(4 * PAGE, 4 * PAGE);
            assertThat(m.reportMemoryFailure(BAD)).isTrue();
            assertThat(m.reportMemoryFailure(BAD)).as("a second report of the same page").isFalse();
            List<PageRun> runs = m.pageRuns();
            long at = BAD - over.offset();
            byte[] into = new byte[(int) PAGE];
            assertThat(assertErrno(() -> over.read(at, 8), "EHWPOISON").errorOffset()).isEqualTo(BAD);
            assertErrno(() -> over.read(0, (int) (2 * PAGE)), "EHWPOISON");  // covers it
            assertErrno(() -> over.write(at, new byte[] {1}), "EHWPOISON");
            assertErrno(() -> over.read(at, MemorySegment.ofArray(into)), "EHWPOISON");
            assertErrno(() -> over.access(at, 1, s -> { }), "EHWPOISON");
            assertErrno(() -> over.compute(at - PAGE, 2 * PAGE, s -> 0), "EHWPOISON");
            assertErrno(() -> over.prefault(at, PAGE), "EHWPOISON");
            assertErrno(() -> over.lease(at, PAGE), "EHWPOISON");
            assertErrno(() -> m.pin(BAD, PAGE), "EHWPOISON");
            assertErrno(() -> m.pin(0, SIZE), "EHWPOISON");
            assertErrno(() -> m.map(BAD, PAGE), "EHWPOISON");
            assertErrno(() -> m.map(0, SIZE), "EHWPOISON");
            GuestMemoryException toPrivate = assertErrno(() -> m.convert(0, SIZE, Attribute.PRIVATE, Content.PRESERVE), "EHWPOISON");
            assertThat(toPrivate.errorOffset()).isEqualTo(BAD);
            assertErrno(() -> m.convert(BAD, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED), "EHWPOISON");
            assertThat(m.pageRuns()).as("nothing changed").isEqualTo(runs);
            assertThat(m.poisonedPages()).containsExactly(BAD);
            assertThat(m.attribute(BAD)).isEqualTo(Attribute.SHARED);
            // The pages around it are as they were, through the old mapping and the new one.
            assertThat(host.read(0, (int) PAGE)).containsOnly(1);
            assertThat(over.read(0, (int) PAGE)).containsOnly(5);
            assertThat(over.read(at + PAGE, (int) PAGE)).containsOnly(7);
            host.close();
            over.close();
        }
    }

    @ParameterizedTest
    @EnumSource(Backing.class)
    @RequiresBacking
    void aPrivatePoisonedPageRefusesPopulateAndConversionToShared(Backing backing) {
        try (GuestMemory m = create(backing, false)) {
            Recorder recorder = new Recorder();
            Binding owner = m.bind(recorder, 0, SIZE);
            m.allocate(BAD, PAGE);
            assertThat(m.reportMemoryFailure(BAD)).isTrue();
            assertThat(recorder.calls).containsExactly("begin MEMORY_FAILURE " + BAD + "+" + PAGE,
                    "end MEMORY_FAILURE " + BAD + "+" + PAGE);
            List<PageRun> runs = m.pageRuns();
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment image = arena.allocate(PAGE);
                image.fill((byte) 0x33);
                assertErrno(() -> owner.populate(BAD, image, null), "EHWPOISON");
                assertErrno(() -> owner.populate(BAD - PAGE, arena.allocate(2 * PAGE), null), "EHWPOISON");
            }
            assertThat(owner.pages().asSlice(BAD, PAGE).toArray(ValueLayout.JAVA_BYTE)).as("populate wrote nothing").containsOnly(0);
            assertErrno(() -> m.convert(BAD, PAGE, Attribute.SHARED, Content.ZERO), "EHWPOISON");
            assertErrno(() -> m.convert(0, SIZE, Attribute.SHARED, Content.PRESERVE), "EHWPOISON");
            assertThat(m.pageRuns()).isEqualTo(runs);
            assertThat(m.attribute(BAD)).isEqualTo(Attribute.PRIVATE);
            // Conversions elsewhere go on.
            m.convert(0, BAD, Attribute.SHARED, Content.ZERO);
            assertThat(m.attribute(0)).isEqualTo(Attribute.SHARED);
        }
    }

    @ParameterizedTest
    @EnumSource(Backing.class)
    @RequiresBacking
    void theFailureRevokesLeasesOverThePageAndPinnedViewsReadZerosNotThePage(Backing backing) {
        try (GuestMemory m = create(backing, true); HostMapping host = m.map(0, SIZE)) {
            fill(m);
            Lease over = host.lease(BAD - PAGE, 2 * PAGE);
            Lease beside = host.lease(0, PAGE);
            Pin pinned = m.pin(BAD, PAGE);
            m.reportMemoryFailure(BAD);
            assertThat(over.isValid()).isFalse();
            assertThat(beside.isValid()).isTrue();
            assertThat(beside.segment().get(ValueLayout.JAVA_BYTE, 0)).isEqualTo((byte) 1);
            assertThat(pinned.segment().toArray(ValueLayout.JAVA_BYTE)).as("no byte of the failed page").containsOnly(0);
            pinned.close();
            beside.close();
        }
    }

    @ParameterizedTest
    @EnumSource(Backing.class)
    @RequiresBacking
    void punchingClearsThePoisonAndThePageIsAHoleAgain(Backing backing) {
        try (GuestMemory m = create(backing, true); HostMapping host = m.map(0, SIZE)) {
            fill(m);
            Recorder recorder = new Recorder();
            m.bind(recorder, 0, SIZE);
            m.reportMemoryFailure(BAD);
            m.reportMemoryFailure(BAD + 2 * PAGE);
            m.punchHole(BAD, PAGE);
            assertThat(m.poisonedPages()).containsExactly(BAD + 2 * PAGE);
            assertThat(m.isPoisoned(BAD)).isFalse();
            assertThat(host.read(BAD - PAGE, (int) (2 * PAGE))).as("the page before, then the hole")
                    .startsWith(page(5)).endsWith(new byte[(int) PAGE]);
            host.write(BAD, new byte[] {9});
            assertThat(host.read(BAD, 1)).containsExactly(9);
            m.convert(BAD, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            m.convert(BAD, PAGE, Attribute.SHARED, Content.ZERO);
            m.punchHole(0, SIZE);
            assertThat(m.poisonedPages()).isEmpty();
            m.convert(0, SIZE, Attribute.PRIVATE, Content.UNSPECIFIED);  // nothing poisoned: the whole file converts
            m.convert(0, SIZE, Attribute.SHARED, Content.ZERO);
            assertThat(host.read(BAD + 2 * PAGE, 4)).containsOnly(0);
            assertThat(recorder.calls).contains("begin MEMORY_FAILURE " + (BAD + 2 * PAGE) + "+" + PAGE);
        }
    }

    static byte[] page(int fill) {
        byte[] page = new byte[(int) PAGE];
        Arrays.fill(page, (byte) fill);
        return page;
    }

    @Test
    void reportsOfNoPageOrOfAHoleAreRefusedAndChangeNothing() {
        GuestMemory m = create(Backing.MEMFD, true);
        m.allocate(0, PAGE);
        List<PageRun> runs = m.pageRuns();
        for (long bad : new long[] {-PAGE, -1, 1, PAGE - 1, PAGE + 1, SIZE, SIZE + PAGE, Long.MAX_VALUE, Long.MIN_VALUE,
                Long.MAX_VALUE - PAGE + 1}) {
            assertErrno(() -> m.reportMemoryFailure(bad), "EINVAL");
        }
        assertThat(assertErrno(() -> m.reportMemoryFailure(PAGE), "EINVAL").getMessage()).contains("hole");
        assertErrno(() -> m.isPoisoned(SIZE), "EINVAL");
        assertErrno(() -> m.isPoisoned(-1), "EINVAL");
        assertThat(m.pageRuns()).isEqualTo(runs);
        assertThat(m.poisonedPages()).isEmpty();
        m.close();
        assertErrno(() -> m.reportMemoryFailure(0), "EBADF");
        assertErrno(m::poisonedPages, "EBADF");
        assertErrno(() -> m.isPoisoned(0), "EBADF");
    }

    @Test
    void everyReportIsRecordedWithItsOutcome() throws Exception {
        java.nio.file.Path file = java.nio.file.Files.createTempFile("guestmemfd", ".jfr");
        try (jdk.jfr.Recording recording = new jdk.jfr.Recording()) {
            recording.enable("dev.guestmemfd.MemoryFailure").withoutThreshold();
            recording.start();
            try (GuestMemory m = create(Backing.MEMFD, true)) {
                m.allocate(BAD, PAGE);
                m.reportMemoryFailure(BAD);
                m.reportMemoryFailure(BAD);
                assertErrno(() -> m.reportMemoryFailure(0), "EINVAL");
            }
            recording.stop();
            recording.dump(file);
        }
        List<jdk.jfr.consumer.RecordedEvent> events = jdk.jfr.consumer.RecordingFile.readAllEvents(file);
        java.nio.file.Files.delete(file);
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.MemoryFailure"))
                .extracting(e -> e.getLong("offset") + " " + e.getLong("length") + " " + e.getString("result")
                + " " + e.getBoolean("newly")).containsExactly(BAD + " " + PAGE + " ok true", BAD + " " + PAGE + " ok false",
                "0 " + PAGE + " EINVAL false");
    }

    @Test
    void aPageTheGuestTouchedCanFailThoughTheLibraryNeverAllocatedIt() {
        try (GuestMemory m = create(Backing.MEMFD, false)) {
            Binding owner = m.bind(new Owner() { }, 0, SIZE);
            owner.pages().set(ValueLayout.JAVA_BYTE, BAD, (byte) 1);  // the guest's own write faults it in
            assertThat(m.reportMemoryFailure(BAD)).isTrue();
        }
    }

    /** A scoped access that began before the failure reads the page's own bytes to its end, not the dummy page. */
    @ParameterizedTest
    @EnumSource(Backing.class)
    @RequiresBacking
    void anAccessInFlightEndsWithThePagesBytesBeforeTheFailureTakesThePage(Backing backing) throws Exception {
        try (GuestMemory m = create(backing, true); HostMapping host = m.map(0, SIZE)) {
            fill(m);
            m.pinWait(java.time.Duration.ofSeconds(10));
            Pin exposed = m.pin(BAD, PAGE);  // so that the failure must replace the page in the host's view
            java.util.concurrent.CountDownLatch inside = new java.util.concurrent.CountDownLatch(1);
            byte[] seen = new byte[2];
            Thread reader = Thread.ofPlatform().start(() -> host.access(BAD, PAGE, page -> {
                seen[0] = page.get(ValueLayout.JAVA_BYTE, 0);
                inside.countDown();
                try {
                    Thread.sleep(200);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                seen[1] = page.get(ValueLayout.JAVA_BYTE, PAGE - 1);
            }));
            inside.await();
            m.reportMemoryFailure(BAD);
            reader.join(30_000);
            assertThat(seen).as("the page's bytes from start to end of the access").containsExactly(6, 6);
            assertThat(exposed.segment().get(ValueLayout.JAVA_BYTE, 0)).as("the pin no longer reaches the page").isZero();
            exposed.close();
        }
    }

    /**
     * Readers and writers hammer every page while pages fail one by one: each access sees its
     * page's own bytes or EHWPOISON, never the zeros of the revoked view, and nothing crashes.
     */
    @ParameterizedTest
    @EnumSource(Backing.class)
    @RequiresBacking
    void concurrentFailuresAndHostReadersNeverShowStaleOrForeignBytes(Backing backing) throws Exception {
        try (GuestMemory m = create(backing, true); HostMapping host = m.map(0, SIZE)) {
            fill(m);
            // A pin over every page: each failure must then replace its page in the host's view,
            // which an access still in flight over it must not see.
            Pin everything = m.pin(0, SIZE);
            AtomicBoolean stop = new AtomicBoolean();
            AtomicLong reads = new AtomicLong();
            AtomicLong refused = new AtomicLong();
            List<Throwable> unexpected = new CopyOnWriteArrayList<>();
            List<Thread> readers = new ArrayList<>();
            for (int t = 0; t < 3; t++) {
                readers.add(Thread.ofPlatform().start(() -> {
                    ThreadLocalRandom random = ThreadLocalRandom.current();
                    while (!stop.get()) {
                        int p = random.nextInt((int) PAGES);
                        try {
                            byte[] bytes = host.read(p * PAGE, (int) PAGE);
                            for (byte b : bytes) {
                                if (b != p + 1) {
                                    throw new AssertionError("page " + p + " read byte " + b);
                                }
                            }
                            reads.incrementAndGet();
                        } catch (GuestMemoryException e) {
                            if (!e.errno().equals(Errno.EHWPOISON) || e.errorOffset() != p * PAGE) {
                                unexpected.add(e);
                            }
                            refused.incrementAndGet();
                        } catch (Throwable e) {
                            unexpected.add(e);
                        }
                    }
                }));
            }
            for (int p = 0; p < PAGES; p += 2) {
                while (reads.get() < 50L * (p + 1) && unexpected.isEmpty()) {
                    Thread.onSpinWait();
                }
                assertThat(m.reportMemoryFailure(p * PAGE)).isTrue();
            }
            while (refused.get() < 50 && unexpected.isEmpty()) {
                Thread.onSpinWait();
            }
            stop.set(true);
            for (Thread t : readers) {
                t.join(30_000);
            }
            everything.close();
            assertThat(unexpected).isEmpty();
            assertThat(m.poisonedPages()).hasSize((int) PAGES / 2);
        }
    }

    // ---------------------------------------------------------------- snapshots

    @ParameterizedTest
    @EnumSource(value = Backing.class, names = {"MEMFD", "SECRET"})
    @RequiresBacking
    void aSnapshotCarriesTheMarkAndRestoreKeepsItWithItsAttribute(Backing backing) throws Exception {
        SecretKey key = SnapshotTest.key();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory source = create(backing, true)) {
            fill(source);
            source.convert(8 * PAGE, 4 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            source.reportMemoryFailure(BAD);
            source.reportMemoryFailure(9 * PAGE);  // a private one
            Binding owner = source.bind(new Owner() { }, 0, SIZE);
            Snapshot.write(owner, key, out);
        }
        SnapshotContents contents = Snapshot.reader(key, new ByteArrayInputStream(out.toByteArray()), new Snapshot.ReplayGuard())
                .verify(state -> { });
        assertThat(contents.poisonedPages()).isEqualTo(2);
        assertThat(contents.sharedHoles()).as("the shared poisoned page carries no bytes").isEqualTo(1);
        assertThat(contents.privateHoles()).isEqualTo(1);
        assertThat(contents.privatePages()).isEqualTo(3);
        try (GuestMemory target = create(backing, true)) {
            Binding owner = target.bind(new Owner() { }, 0, SIZE);
            Snapshot.restore(owner, key, new ByteArrayInputStream(out.toByteArray()), new Snapshot.ReplayGuard());
            assertThat(target.poisonedPages()).containsExactly(BAD, 9 * PAGE);
            assertThat(target.attribute(BAD)).isEqualTo(Attribute.SHARED);
            assertThat(target.attribute(9 * PAGE)).isEqualTo(Attribute.PRIVATE);
            try (HostMapping host = target.map(0, 4 * PAGE)) {
                assertThat(host.read(3 * PAGE, (int) PAGE)).containsOnly(4);
            }
            assertThat(owner.pages().asSlice(8 * PAGE, PAGE).toArray(ValueLayout.JAVA_BYTE)).containsOnly(9);
            assertErrno(() -> target.pin(BAD, PAGE), "EHWPOISON");
        }
    }

    @Test
    void aLaterRoundThatSendsThePunchedAndRefilledPageClearsTheMark() throws Exception {
        SecretKey key = SnapshotTest.key();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory source = create(Backing.MEMFD, true)) {
            fill(source);
            Binding owner = source.bind(new Owner() { }, 0, SIZE);
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), key, out);
            ChangeLog log = source.trackChanges();
            source.reportMemoryFailure(BAD);
            writer.writeAll();
            log.drain();
            source.punchHole(BAD, PAGE);
            try (HostMapping host = source.map(0, SIZE)) {
                host.write(BAD, new byte[] {0x77});  // refilled: a page record, not a hole, names it next
            }
            source.reportMemoryFailure(BAD + PAGE);
            writer.writePages(log.drain());
            writer.finish();
            log.close();
        }
        try (GuestMemory target = create(Backing.MEMFD, true)) {
            Binding owner = target.bind(new Owner() { }, 0, SIZE);
            Snapshot.restore(owner, key, new ByteArrayInputStream(out.toByteArray()), new Snapshot.ReplayGuard());
            assertThat(target.poisonedPages()).containsExactly(BAD + PAGE);
            try (HostMapping host = target.map(BAD, PAGE)) {
                assertThat(host.read(0, 2)).containsExactly(0x77, 0);
            }
        }
    }

    /** A version 2 stream (before poisoned records) still restores; a poisoned record in one is refused. */
    @Test
    void aVersionTwoStreamStillReadsAndMayNotCarryTheNewRecord() throws Exception {
        SecretKey key = SnapshotTest.key();
        byte[] old = versionTwo(key, false);
        try (GuestMemory target = create(Backing.MEMFD, true)) {
            Binding owner = target.bind(new Owner() { }, 0, SIZE);
            Snapshot.restore(owner, key, new ByteArrayInputStream(old), new Snapshot.ReplayGuard());
            assertThat(target.attribute(0)).isEqualTo(Attribute.PRIVATE);
            assertThat(target.attribute(PAGE)).isEqualTo(Attribute.SHARED);
            assertThat(target.poisonedPages()).isEmpty();
        }
        SnapshotContents contents = Snapshot.reader(key, new ByteArrayInputStream(old), new Snapshot.ReplayGuard()).verify(s -> { });
        assertThat(contents.privateHoles()).isEqualTo(1);
        assertThat(contents.poisonedPages()).isZero();
        byte[] forged = versionTwo(key, true);
        try (GuestMemory target = create(Backing.MEMFD, true)) {
            Binding owner = target.bind(new Owner() { }, 0, SIZE);
            List<PageRun> before = target.pageRuns();
            assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(forged), new Snapshot.ReplayGuard()),
                    "EBADMSG");
            assertThat(target.pageRuns()).isEqualTo(before);
            assertThat(target.poisonedPages()).isEmpty();
        }
    }

    /** {@return a version 2 stream: page 0 a private hole, the rest shared holes; with a poisoned record if asked} */
    static byte[] versionTwo(SecretKey key, boolean withPoison) throws Exception {
        ByteArrayOutputStream raw = new ByteArrayOutputStream();
        MessageDigest digest = SnapshotFormat.sha256();
        DataOutputStream data = new DataOutputStream(new DigestOutputStream(raw, digest));
        byte[] streamId = new byte[SnapshotFormat.STREAM_ID_BYTES];
        ThreadLocalRandom.current().nextBytes(streamId);
        SnapshotFormat.writeHeader(data, 2, SIZE, streamId);
        SnapshotFormat.writeRecordHeader(data, SnapshotFormat.PRIVATE_HOLE, 0, 1);
        SnapshotFormat.writeRecordHeader(data, SnapshotFormat.SHARED_HOLE, PAGE, (int) PAGES - 1);
        long records = 2;
        if (withPoison) {
            SnapshotFormat.writeRecordHeader(data, SnapshotFormat.POISONED, PAGE, 1);
            records++;
        }
        data.writeByte(SnapshotFormat.END);
        data.writeLong(records);
        data.flush();
        byte[] sum = digest.digest();
        raw.write(SnapshotFormat.seal(key, streamId, SnapshotFormat.TRAILER_RECORD, SnapshotFormat.END, records, sum, sum.length));
        return raw.toByteArray();
    }

    @Test
    void aPoisonedRecordForPagesNoRecordNamedIsRefused() throws Exception {
        SecretKey key = SnapshotTest.key();
        ByteArrayOutputStream raw = new ByteArrayOutputStream();
        MessageDigest digest = SnapshotFormat.sha256();
        DataOutputStream data = new DataOutputStream(new DigestOutputStream(raw, digest));
        byte[] streamId = new byte[SnapshotFormat.STREAM_ID_BYTES];
        SnapshotFormat.writeHeader(data, SIZE, streamId);
        SnapshotFormat.writeRecordHeader(data, SnapshotFormat.POISONED, PAGE, 1);
        data.writeByte(SnapshotFormat.END);
        data.writeLong(1);
        data.flush();
        byte[] sum = digest.digest();
        raw.write(SnapshotFormat.seal(key, streamId, SnapshotFormat.TRAILER_RECORD, SnapshotFormat.END, 1, sum, sum.length));
        assertErrno(() -> Snapshot.reader(key, new ByteArrayInputStream(raw.toByteArray()), new Snapshot.ReplayGuard())
                .verify(s -> { }), "EBADMSG");
    }
}
