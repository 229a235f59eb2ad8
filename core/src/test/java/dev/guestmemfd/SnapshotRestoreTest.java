package dev.guestmemfd;

import static dev.guestmemfd.Errors.assertErrno;
import static dev.guestmemfd.SnapshotFixtures.PAGE;
import static dev.guestmemfd.SnapshotFixtures.flags;
import static dev.guestmemfd.SnapshotFixtures.key;
import static dev.guestmemfd.SnapshotFixtures.page;
import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.SnapshotFixtures.HostPoller;
import dev.guestmemfd.SnapshotFixtures.TargetState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Restores staged against host code that polls the target, refused restores undone on every
 * backing, streams that end exactly at their trailer, and targets of several bindings.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SnapshotRestoreTest {
    static final long PAGES = 4;
    static final long X = 2;
    static final byte[] SECRET = page("private plaintext of page X, ".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
    static final byte[] CLEAR = page(0x3c);

    /** {@return {@code pages}, or the pages of one huge page on a backing of huge pages: files are whole huge pages} */
    static long pages(Backing backing, long pages) {
        return Math.max(pages, backing.blockSize() / PAGE);
    }

    static Stream<Backing> backings() {
        return Backing.available().stream();
    }

    static Stream<Arguments> backingsAndFirstAttribute() {
        return backings().flatMap(b -> Stream.of(Arguments.of(b, false), Arguments.of(b, true)));
    }

    /** An owner that sets {@code poller} on {@code host} when a conversion to private first reaches it. */
    static Owner pollingFromFirstPrivate(HostPoller poller, HostMapping host) {
        return new Owner() {
            @Override
            public void prepareInaccessible(Binding binding, long offset, long length, Content content) {
                poller.poll(host);
            }
        };
    }

    /**
     * The measured leak: a pre-copy stream carries pages sealed, then in the clear.
     * Host code polls every page of the target while it restores. It must never read a page's
     * old secret; once restored, every page shows the clear bytes. On a target that starts
     * shared, polling starts when the restore first makes a page private (reading a shared hole
     * before would allocate it, and the target would no longer be empty).
     */
    @ParameterizedTest(name = "{0}, starts shared: {1}")
    @MethodSource("backingsAndFirstAttribute")
    void pagesSentSealedThenInTheClearNeverShowTheHostTheirOldSecret(Backing backing, boolean initShared) throws Exception {
        SecretKey key = key();
        long pages = pages(backing, PAGES);
        byte[] stream = SnapshotFixtures.sealedThenClear(pages, SECRET, CLEAR, key);
        try (HostPoller poller = new HostPoller(List.of(SECRET))) {
            for (int i = 0; i < 300; i++) {
                try (GuestMemory target = GuestMemory.create(pages * PAGE, flags(backing, initShared), backing);
                     HostMapping host = target.map(0, pages * PAGE)) {
                    Binding owner = target.bind(initShared ? pollingFromFirstPrivate(poller, host) : new Owner() { },
                            0, pages * PAGE);
                    if (!initShared) {
                        poller.poll(host);
                    }
                    Snapshot.restore(owner, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard());
                    poller.poll(host);
                    long reads = poller.reads();
                    while (poller.reads() == reads) {
                        Thread.onSpinWait();  // until the poller has read a published page of this target
                    }
                    poller.poll(null);
                    for (long x = 0; x < PAGES; x++) {
                        assertThat(host.read(x * PAGE, (int) PAGE)).isEqualTo(CLEAR);
                    }
                }
            }
            poller.stop();
            System.out.println("sealed then clear, " + backing + (initShared ? " starting shared" : " starting private")
                    + ": 300 restores, " + poller.reads() + " host reads granted, " + poller.secretsSeen()
                    + " returned old private plaintext");
            assertThat(poller.secretsSeen()).as("host reads that returned a page's old private plaintext").isZero();
        }
    }

    /**
     * A stream cut before its end with one forged clear record of a private page appended:
     * refused, and host code polling the target meanwhile never reads the page's secret nor
     * the forged bytes, and the target is as before, every time.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("backings")
    void aCutStreamWithAForgedClearRecordIsRefusedAndShowsTheHostNothing(Backing backing) throws Exception {
        SecretKey key = key();
        long pages = pages(backing, PAGES);
        byte[] forgedBytes = page(0x7f);
        byte[] stream = SnapshotFixtures.cutWithForgedClearRecord(pages, X, SECRET, forgedBytes, key);
        try (GuestMemory target = GuestMemory.create(pages * PAGE, flags(backing, false), backing);
             HostMapping host = target.map(0, pages * PAGE);
             HostPoller poller = new HostPoller(List.of(SECRET, forgedBytes))) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            TargetState before = TargetState.of(target);
            Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
            poller.poll(host);
            for (int i = 0; i < 300; i++) {
                assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(stream), guard), "EBADMSG");
                assertThat(TargetState.of(target)).as("attempt %d", i).isEqualTo(before);
            }
            poller.stop();
            System.out.println("cut and forged, " + backing + ": 300 refused restores, " + poller.reads()
                    + " host reads granted, " + poller.secretsSeen() + " returned the secret or the forged bytes");
            assertThat(poller.secretsSeen()).as("host reads that returned the secret or the forged bytes").isZero();
        }
    }

    /** A file with shared data, private data and a private hole, and its stream. */
    static byte[] mixedStream(long pages, SecretKey key) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory source = GuestMemory.create(pages * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD)) {
            Binding owner = source.bind(new Owner() { }, 0, pages * PAGE);
            owner.pages().asSlice(0, PAGE).fill((byte) 0x11);
            source.convert(PAGE, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(PAGE, PAGE).copyFrom(java.lang.foreign.MemorySegment.ofArray(SECRET));
            owner.pages().asSlice((pages - 1) * PAGE, PAGE).fill((byte) 0x22);
            Snapshot.write(owner, key, out);
        }
        return out.toByteArray();
    }

    /** Reads through the file's own mapping, as an owner does, private pages included. */
    static void assertRestoredMixed(GuestMemory target, long pages) {
        java.lang.foreign.MemorySegment all = target.pages();
        assertThat(target.attribute(0)).isEqualTo(Attribute.SHARED);
        assertThat(target.attribute(PAGE)).isEqualTo(Attribute.PRIVATE);
        assertThat(target.attribute(2 * PAGE)).isEqualTo(Attribute.PRIVATE);
        assertThat(target.attribute((pages - 1) * PAGE)).isEqualTo(Attribute.SHARED);
        assertThat(all.asSlice(0, PAGE).toArray(ValueLayout.JAVA_BYTE)).containsOnly(0x11);
        assertThat(all.asSlice(PAGE, PAGE).toArray(ValueLayout.JAVA_BYTE)).isEqualTo(SECRET);
        assertThat(all.asSlice((pages - 1) * PAGE, PAGE).toArray(ValueLayout.JAVA_BYTE)).containsOnly(0x22);
    }

    /** The stream ends at its sealed digest: any byte after it is refused, and nothing changes. */
    @ParameterizedTest(name = "{0}, starts shared: {1}")
    @MethodSource("backingsAndFirstAttribute")
    void bytesAfterTheTrailerAreRefusedAndNothingChanges(Backing backing, boolean initShared) throws Exception {
        SecretKey key = key();
        long pages = pages(backing, 8);
        byte[] stream = mixedStream(pages, key);
        Random random = new Random(14);
        try (GuestMemory target = GuestMemory.create(pages * PAGE, flags(backing, initShared), backing)) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            TargetState before = TargetState.of(target);
            Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
            for (int extra : new int[] {1, 16, 4096, 100_000}) {
                byte[] longer = Arrays.copyOf(stream, stream.length + extra);
                byte[] tail = new byte[extra];
                random.nextBytes(tail);
                System.arraycopy(tail, 0, longer, stream.length, extra);
                assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(longer), guard), "EBADMSG");
                assertThat(TargetState.of(target)).as("%d bytes appended", extra).isEqualTo(before);
            }
            byte[] twice = Arrays.copyOf(stream, 2 * stream.length);
            System.arraycopy(stream, 0, twice, stream.length, stream.length);
            assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(twice), guard), "EBADMSG");
            assertThat(TargetState.of(target)).isEqualTo(before);
            Snapshot.restore(owner, key, new ByteArrayInputStream(stream), guard);
            assertRestoredMixed(target, pages);
        }
    }

    /** An embedded stream is read up to its end and no further: what follows is the caller's. */
    @Test
    void anEmbeddedStreamLeavesWhatFollowsItUnread() throws Exception {
        SecretKey key = key();
        byte[] stream = mixedStream(8, key);
        byte[] conversation = Arrays.copyOf(stream, stream.length + 3);
        conversation[stream.length] = 42;
        ByteArrayInputStream in = new ByteArrayInputStream(conversation);
        try (GuestMemory target = GuestMemory.create(8 * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD)) {
            Binding owner = target.bind(new Owner() { }, 0, 8 * PAGE);
            Snapshot.reader(key, in, new Snapshot.ReplayGuard(), Snapshot.Framing.EMBEDDED).restore(List.of(owner), s -> { });
            assertRestoredMixed(target, 8);
        }
        assertThat(in.read()).isEqualTo(42);
    }

    /**
     * A refused restore is undone on every backing, memfd_secret included, where punched pages
     * stay allocated (reading zero): the target is as before by {@link TargetState}, and the
     * next restore into it is accepted, after any number of refusals.
     */
    @ParameterizedTest(name = "{0}, starts shared: {1}")
    @MethodSource("backingsAndFirstAttribute")
    void aRefusedRestoreIsUndoneAndTheTargetStaysRestorable(Backing backing, boolean initShared) throws Exception {
        SecretKey key = key();
        long pages = pages(backing, 8);
        byte[] stream = mixedStream(pages, key);
        try (GuestMemory target = GuestMemory.create(pages * PAGE, flags(backing, initShared), backing)) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            TargetState before = TargetState.of(target);
            Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
            List<Integer> cuts = new ArrayList<>();
            for (int cut = 0; cut < stream.length; cut += 509) {
                cuts.add(cut);
            }
            cuts.add(stream.length - 1);
            for (int cut : cuts) {
                byte[] cutStream = Arrays.copyOf(stream, cut);
                assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(cutStream), guard), "EBADMSG");
                assertThat(TargetState.of(target)).as("cut at %d", cut).isEqualTo(before);
            }
            assertErrno(() -> Snapshot.restore(owner, key(), new ByteArrayInputStream(stream), guard), "EBADMSG");
            assertThat(TargetState.of(target)).isEqualTo(before);
            Snapshot.restore(owner, key, new ByteArrayInputStream(stream), guard);
            assertRestoredMixed(target, pages);
            assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()), "EINVAL");
        }
    }

    /** A page that reads zero is a hole to a memfd_secret target; one that holds a byte is data. */
    @Test
    void aSecretTargetWithDataIsRefusedButOneOfZeroedPagesIsNot() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(Backing.SECRET.isAvailable(), "memfd_secret is not offered here");
        SecretKey key = key();
        byte[] stream = mixedStream(8, key);
        try (GuestMemory target = GuestMemory.create(8 * PAGE, flags(Backing.SECRET, true), Backing.SECRET)) {
            Binding owner = target.bind(new Owner() { }, 0, 8 * PAGE);
            owner.pages().set(ValueLayout.JAVA_BYTE, 5 * PAGE + 7, (byte) 1);
            TargetState before = TargetState.of(target);
            assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()), "EINVAL");
            assertThat(TargetState.of(target)).isEqualTo(before);
            target.punchHole(5 * PAGE, PAGE);
            Snapshot.restore(owner, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard());
            assertRestoredMixed(target, 8);
        }
    }

    /** Records span bindings: a stream of one binding restores into a file of two, and back. */
    @ParameterizedTest(name = "{0}")
    @MethodSource("backings")
    void aStreamRestoresIntoATargetOfSeveralBindingsAndBack(Backing backing) throws Exception {
        SecretKey key = key();
        long pages = pages(backing, 8);
        byte[] stream = mixedStream(pages, key);
        try (GuestMemory target = GuestMemory.create(pages * PAGE, flags(backing, true), backing)) {
            Binding low = target.bind(new Owner() { }, 0, 3 * PAGE);
            Binding high = target.bind(new Owner() { }, 3 * PAGE, (pages - 3) * PAGE);
            Snapshot.restore(List.of(high, low), key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard());
            assertRestoredMixed(target, pages);
            ByteArrayOutputStream again = new ByteArrayOutputStream();
            Snapshot.write(List.of(low, high), key, again);
            try (GuestMemory second = GuestMemory.create(pages * PAGE, flags(backing, true), backing)) {
                Binding one = second.bind(new Owner() { }, 0, pages * PAGE);
                Snapshot.restore(one, key, new ByteArrayInputStream(again.toByteArray()), new Snapshot.ReplayGuard());
                assertRestoredMixed(second, pages);
            }
        }
    }

    /** Bindings that do not cover one file, each page once, are refused with EINVAL, and nothing changes. */
    @Test
    void bindingListsThatDoNotCoverTheFileOnceAreRefused() throws Exception {
        SecretKey key = key();
        byte[] stream = mixedStream(8, key);
        try (GuestMemory m = GuestMemory.create(8 * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD);
             GuestMemory other = GuestMemory.create(8 * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD)) {
            Binding low = m.bind(new Owner() { }, 0, 4 * PAGE);
            Binding high = m.bind(new Owner() { }, 4 * PAGE, 4 * PAGE);
            Binding foreign = other.bind(new Owner() { }, 4 * PAGE, 4 * PAGE);
            List<Binding> withNull = new ArrayList<>();
            withNull.add(low);
            withNull.add(null);
            List<List<Binding>> wrong = List.of(List.of(), List.of(low, low), List.of(low), List.of(high),
                    List.of(low, high, low), List.of(low, foreign), withNull);
            TargetState before = TargetState.of(m);
            for (List<Binding> owners : wrong) {
                assertErrno(() -> Snapshot.write(owners, key, new ByteArrayOutputStream()), "EINVAL");
                assertErrno(() -> Snapshot.writer(owners, key, new ByteArrayOutputStream()), "EINVAL");
                assertErrno(() -> Snapshot.restore(owners, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()), "EINVAL");
            }
            assertErrno(() -> Snapshot.write((Binding) null, key, new ByteArrayOutputStream()), "EINVAL");
            assertErrno(() -> Snapshot.restore((Binding) null, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()), "EINVAL");
            assertErrno(() -> Snapshot.write(List.of(low, high), null, new ByteArrayOutputStream()), "EINVAL");
            assertErrno(() -> Snapshot.reader(null, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()), "EINVAL");
            assertErrno(() -> Snapshot.reader(key, new ByteArrayInputStream(stream), null), "EINVAL");
            assertThat(TargetState.of(m)).isEqualTo(before);

            Snapshot.Reader reader = Snapshot.reader(key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard());
            reader.restore(List.of(high, low), s -> { });
            assertErrno(() -> reader.restore(List.of(low, high), s -> { }), "EINVAL");
            assertErrno(reader::readState, "EINVAL");

            Snapshot.Writer writer = Snapshot.writer(List.of(low, high), key, new ByteArrayOutputStream());
            writer.finish();
            assertErrno(writer::writeAll, "EINVAL");
            assertErrno(() -> writer.writeState(new byte[1]), "EINVAL");
            assertErrno(() -> writer.writePages(new java.util.BitSet()), "EINVAL");
        }
    }
}
