package dev.guestmemfd;

import static dev.guestmemfd.Attack2Fixture.END;
import static dev.guestmemfd.Attack2Fixture.HEADER;
import static dev.guestmemfd.Attack2Fixture.PAGE;
import static dev.guestmemfd.Attack2Fixture.SIZE;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import javax.crypto.SecretKey;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import dev.guestmemfd.Attack2Fixture.Rec;
import dev.guestmemfd.Attack2Fixture.State;

/**
 * Altered snapshot streams against {@link Snapshot#restore} and {@link Snapshot.Reader#verify},
 * written from the public contract alone: every alteration is refused with its errno, and the
 * target is as it was (attributes, host-visible bytes, nothing allocated).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class Attack2SnapshotTest {
    static SecretKey key;
    static GuestMemory source;
    static byte[] good;
    static List<Rec> recs;

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

    /** Restores {@code stream} into a fresh empty file and returns the refusal, checking nothing changed. */
    static GuestMemoryException refused(byte[] stream, String what) {
        try (GuestMemory target = Attack2Fixture.newFile()) {
            Binding b = Attack2Fixture.bindingOf(target);
            State before = Attack2Fixture.state(target);
            Throwable t = catchThrowable(() -> Snapshot.restore(b, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()));
            assertThat(t).as(what).isInstanceOf(GuestMemoryException.class);
            assertThat(Attack2Fixture.state(target)).as(what + ": state after the refusal").isEqualTo(before);
            assertThat(target.pageCounts().allocated()).as(what + ": allocated after the refusal").isZero();
            return (GuestMemoryException) t;
        }
    }

    static void assertRefusedWith(byte[] stream, String what, Errno... allowed) {
        GuestMemoryException e = refused(stream, what);
        assertThat(e.errno()).as(what + ": " + e.getMessage()).isIn((Object[]) allowed);
    }

    @Test
    void theFixtureStreamRestoresAndParses() throws IOException {
        assertThat(recs.getLast().kind()).isZero();
        assertThat(recs.getLast().end()).isEqualTo(good.length);
        assertThat(recs.stream().map(Rec::kind).toList()).contains(1, 2);
        try (GuestMemory target = Attack2Fixture.newFile()) {
            Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard());
            Attack2Fixture.assertRestored(target);
        }
    }

    @Test
    void everyCutIsRefusedAndLeavesTheTargetEmpty() {
        Set<Integer> cuts = new java.util.TreeSet<>(List.of(0, 1, 7, 8, 12, 20, 24, HEADER - 1, HEADER, good.length - 1,
                good.length - 16, good.length - 17, good.length - END, good.length - END + 1));
        for (Rec r : recs) {
            cuts.addAll(List.of(r.start(), r.start() + 1, r.headerEnd() - 1, r.headerEnd(), r.headerEnd() + 1, r.end() - 1));
        }
        cuts.removeIf(c -> c < 0 || c >= good.length);
        for (int cut : cuts) {
            assertRefusedWith(Arrays.copyOf(good, cut), "cut at " + cut + " of " + good.length, Errno.EBADMSG);
        }
    }

    @Test
    void everyFlippedStructuralByteIsRefused() {
        Map<Integer, String> at = new LinkedHashMap<>();
        for (int i = 0; i < HEADER; i++) {
            at.put(i, "header byte " + i);
        }
        for (Rec r : recs) {
            int bodyStart = r.headerEnd();
            int n = r.kind() == 0 ? END : 13;
            for (int i = 0; i < n; i++) {
                at.put(r.start() + i, "kind " + r.kind() + " record at " + r.start() + " header byte " + i);
            }
            if (r.end() > bodyStart && r.kind() != 0) {
                at.put(bodyStart, "kind " + r.kind() + " first body byte");
                at.put(bodyStart + 100, "kind " + r.kind() + " body byte 100");
                at.put(r.end() - 1, "kind " + r.kind() + " last body byte");
                at.put(r.end() - 17, "kind " + r.kind() + " byte before the tag");
            }
        }
        for (var e : at.entrySet()) {
            int i = e.getKey();
            // The header's file size names another file: the contract allows either refusal.
            Errno[] allowed = (i >= 12 && i < 20) ? new Errno[] {Errno.EBADMSG, Errno.EINVAL, Errno.EFBIG}
                    : new Errno[] {Errno.EBADMSG};
            assertRefusedWith(Attack2Fixture.flip(good, i), e.getValue(), allowed);
        }
    }

    @Test
    void verifyRefusesEveryFlippedByteOfTheEndAndTheRecordHeaders() throws IOException {
        List<Integer> at = new ArrayList<>();
        for (Rec r : recs) {
            for (int i = 0; i < (r.kind() == 0 ? END : 13); i++) {
                at.add(r.start() + i);
            }
        }
        for (int i : at) {
            byte[] s = Attack2Fixture.flip(good, i);
            Throwable t = catchThrowable(() -> Snapshot.reader(key, new ByteArrayInputStream(s), new Snapshot.ReplayGuard()).verify(x -> {
            }));
            assertThat(t).as("flip at " + i).isInstanceOf(GuestMemoryException.class);
            assertThat(((GuestMemoryException) t).errno()).as("flip at " + i + ": " + t.getMessage()).isEqualTo(Errno.EBADMSG);
        }
        SnapshotContents c = Snapshot.reader(key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard()).verify(x -> {
        });
        assertThat(c.sharedPages()).isEqualTo(3);
        assertThat(c.privatePages()).isEqualTo(2);
    }

    @Test
    void trailingBytesAreRefusedAsWholeInputAndLeftUnreadWhenEmbedded() throws IOException {
        byte[] end = Arrays.copyOfRange(good, good.length - END, good.length);
        for (byte[] tail : List.of(new byte[] {0}, new byte[] {(byte) 0xff}, end, good)) {
            assertRefusedWith(Attack2Fixture.concat(good, tail), "trailing " + tail.length + " bytes", Errno.EBADMSG);
        }
        try (GuestMemory target = Attack2Fixture.newFile()) {
            ByteArrayInputStream in = new ByteArrayInputStream(Attack2Fixture.concat(good, new byte[] {42, 43}));
            Snapshot.Reader r = Snapshot.reader(key, in, new Snapshot.ReplayGuard(), Snapshot.Framing.EMBEDDED);
            r.restore(List.of(Attack2Fixture.bindingOf(target)), s -> {
            });
            Attack2Fixture.assertRestored(target);
            assertThat(in.read()).as("the byte after the sealed end is the caller's").isEqualTo(42);
        }
    }

    @Test
    void duplicatedDroppedAndReorderedRecordsAreRefused() {
        List<Rec> body = recs.subList(0, recs.size() - 1);
        for (int k = 0; k < body.size(); k++) {
            Rec r = body.get(k);
            byte[] copy = Arrays.copyOfRange(good, r.start(), r.end());
            assertRefusedWith(Attack2Fixture.insert(good, r.end(), copy), "record " + k + " (kind " + r.kind() + ") twice", Errno.EBADMSG);
            byte[] dropped = Attack2Fixture.concat(Arrays.copyOfRange(good, 0, r.start()), Arrays.copyOfRange(good, r.end(), good.length));
            assertRefusedWith(dropped, "record " + k + " (kind " + r.kind() + ") dropped", Errno.EBADMSG);
            if (k + 1 < body.size()) {
                Rec n = body.get(k + 1);
                byte[] swapped = Attack2Fixture.concat(Arrays.copyOfRange(good, 0, r.start()), Arrays.copyOfRange(good, n.start(), n.end()),
                        Arrays.copyOfRange(good, r.start(), r.end()), Arrays.copyOfRange(good, n.end(), good.length));
                assertRefusedWith(swapped, "records " + k + " and " + (k + 1) + " swapped", Errno.EBADMSG);
            }
        }
        // the whole stream's records played twice under one end
        byte[] twice = Attack2Fixture.insert(good, recs.getLast().start(),
                Arrays.copyOfRange(good, HEADER, recs.getLast().start()));
        assertRefusedWith(twice, "every record twice", Errno.EBADMSG);
    }

    /** Forged records, each put right after the header (applied first) and right before the end. */
    @Test
    void forgedRecordsOutsideTheFileOverflowingOrOfUnknownKindAreRefused() {
        byte[] page = new byte[(int) PAGE];
        Arrays.fill(page, (byte) 0x5a);
        Map<String, byte[]> forged = new LinkedHashMap<>();
        forged.put("shared page at the file's end", Attack2Fixture.record(1, SIZE, (int) PAGE, page));
        forged.put("shared pages crossing the end", Attack2Fixture.record(1, SIZE - PAGE, (int) (2 * PAGE), Attack2Fixture.concat(page, page)));
        forged.put("shared page at -4096", Attack2Fixture.record(1, -PAGE, (int) PAGE, page));
        forged.put("shared page at Long.MIN_VALUE", Attack2Fixture.record(1, Long.MIN_VALUE, (int) PAGE, page));
        forged.put("shared page at the largest aligned offset", Attack2Fixture.record(1, Long.MAX_VALUE & -PAGE, (int) PAGE, page));
        forged.put("shared page at an unaligned offset", Attack2Fixture.record(1, 1, (int) PAGE, page));
        forged.put("shared record of 0 bytes", Attack2Fixture.record(1, 0, 0, new byte[0]));
        forged.put("shared record of 100 bytes", Attack2Fixture.record(1, 0, 100, Arrays.copyOf(page, 100)));
        forged.put("shared record of 4 GiB - 1 bytes", Attack2Fixture.record(1, 0, -1, page));
        forged.put("shared record of 2 GiB bytes", Attack2Fixture.record(1, 0, Integer.MIN_VALUE, page));
        forged.put("private record of 4 GiB - 1 bytes", Attack2Fixture.record(2, 0, -1, page));
        forged.put("private record with a forged tag", Attack2Fixture.record(2, 0, (int) PAGE, Attack2Fixture.concat(page, new byte[16])));
        for (int kind : new int[] {3, 4, 6}) {
            forged.put("kind " + kind + " of 2^32-1 pages", Attack2Fixture.record(kind, 0, -1, new byte[0]));
            forged.put("kind " + kind + " of 0 pages", Attack2Fixture.record(kind, 0, 0, new byte[0]));
            forged.put("kind " + kind + " at the end", Attack2Fixture.record(kind, SIZE, 1, new byte[0]));
            forged.put("kind " + kind + " crossing the end", Attack2Fixture.record(kind, SIZE - PAGE, 2, new byte[0]));
            forged.put("kind " + kind + " at -4096", Attack2Fixture.record(kind, -PAGE, 1, new byte[0]));
            forged.put("kind " + kind + " whose end overflows", Attack2Fixture.record(kind, Long.MAX_VALUE & -PAGE, 0x7fff_ffff, new byte[0]));
            forged.put("kind " + kind + " unaligned", Attack2Fixture.record(kind, 100, 1, new byte[0]));
        }
        forged.put("owner state of 4 GiB - 1 bytes", Attack2Fixture.record(5, 0, -1, page));
        forged.put("owner state at offset 4096", Attack2Fixture.record(5, PAGE, 16, new byte[32]));
        forged.put("kind 7", Attack2Fixture.record(7, 0, 1, new byte[0]));
        forged.put("kind 255", Attack2Fixture.record(255, 0, (int) PAGE, page));
        forged.put("an early end record", Attack2Fixture.concat(new byte[] {0}, new byte[8], new byte[48]));
        forged.put("poisoned page nobody named", Attack2Fixture.record(6, 0, 1, new byte[0]));
        for (var e : forged.entrySet()) {
            assertRefusedWith(Attack2Fixture.insert(good, HEADER, e.getValue()), e.getKey() + " first", Errno.EBADMSG);
            assertRefusedWith(Attack2Fixture.insert(good, recs.getLast().start(), e.getValue()), e.getKey() + " last", Errno.EBADMSG);
        }
    }

    @Test
    void otherVersionsAndFormatsAreRefused() {
        for (int version : new int[] {0, 1, 5, 0x7fff_ffff, -1}) {
            byte[] s = good.clone();
            ByteBuffer.wrap(s).putInt(8, version);
            assertRefusedWith(s, "version " + version, Errno.EBADMSG);
        }
        for (int older : new int[] {2, 3}) {
            byte[] relabelled = good.clone();
            ByteBuffer.wrap(relabelled).putInt(8, older);
            assertRefusedWith(relabelled, "the v4 stream relabelled v" + older, Errno.EBADMSG);
        }
        byte[] magic = good.clone();
        magic[0] = 'X';
        assertRefusedWith(magic, "another magic", Errno.EBADMSG);
        for (int pageSize : new int[] {0, 2 * (int) PAGE, 1 << 21, -1}) {
            byte[] s = good.clone();
            ByteBuffer.wrap(s).putInt(20, pageSize);
            assertRefusedWith(s, "page size " + pageSize, Errno.EBADMSG);
        }
    }

    @Test
    void aVersionTwoStreamWithAPoisonRecordIsRefused() throws IOException {
        try (GuestMemory src = Attack2Fixture.source()) {
            src.reportMemoryFailure(0);
            byte[] s = Attack2Fixture.stream(src, key);
            List<Rec> rs = Attack2Fixture.records(s);
            assertThat(rs.stream().map(Rec::kind).toList()).contains(6);
            // as it is, it restores with the page failed again
            try (GuestMemory target = Attack2Fixture.newFile()) {
                Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(s), new Snapshot.ReplayGuard());
                assertThat(target.poisonedPages()).containsExactly(0L);
            }
            byte[] v2 = s.clone();
            ByteBuffer.wrap(v2).putInt(8, 2);
            assertRefusedWith(v2, "a v2 stream carrying kind 6", Errno.EBADMSG);
            // the poisoned record moved before the hole record of its page
            Rec poison = rs.stream().filter(r -> r.kind() == 6).findFirst().orElseThrow();
            byte[] cut = Attack2Fixture.concat(Arrays.copyOfRange(s, 0, poison.start()), Arrays.copyOfRange(s, poison.end(), s.length));
            assertRefusedWith(Attack2Fixture.insert(cut, HEADER, Arrays.copyOfRange(s, poison.start(), poison.end())),
                    "the poison record first", Errno.EBADMSG);
        }
    }

    @Test
    void aRefusedCopyDoesNotUseUpTheStreamButARestoredOneDoes() throws IOException {
        Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
        for (byte[] bad : List.of(Arrays.copyOf(good, good.length - 1), Attack2Fixture.flip(good, good.length - 1),
                Attack2Fixture.concat(good, new byte[1]))) {
            try (GuestMemory target = Attack2Fixture.newFile()) {
                Throwable t = catchThrowable(() -> Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(bad), guard));
                assertThat(t).isInstanceOf(GuestMemoryException.class);
                assertThat(((GuestMemoryException) t).errno()).isEqualTo(Errno.EBADMSG);
            }
        }
        try (GuestMemory target = Attack2Fixture.newFile()) {
            Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(good), guard);
            Attack2Fixture.assertRestored(target);
        }
        try (GuestMemory target = Attack2Fixture.newFile()) {
            State before = Attack2Fixture.state(target);
            Throwable t = catchThrowable(() -> Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(good), guard));
            assertThat(t).isInstanceOf(GuestMemoryException.class);
            assertThat(((GuestMemoryException) t).errno()).isEqualTo(Errno.EALREADY);
            assertThat(Attack2Fixture.state(target)).isEqualTo(before);
            assertThat(target.pageCounts().allocated()).isZero();
        }
    }

    @Test
    void aWrongKeyIsRefused() {
        SecretKey other = Attack2Fixture.key();
        try (GuestMemory target = Attack2Fixture.newFile()) {
            State before = Attack2Fixture.state(target);
            Throwable t = catchThrowable(() -> Snapshot.restore(Attack2Fixture.bindingOf(target), other, new ByteArrayInputStream(good),
                    new Snapshot.ReplayGuard()));
            assertThat(((GuestMemoryException) t).errno()).isEqualTo(Errno.EBADMSG);
            assertThat(Attack2Fixture.state(target)).isEqualTo(before);
            assertThat(target.pageCounts().allocated()).isZero();
        }
    }

    @Test
    void wrongTargetsAreRefusedAndKeepTheirContents() throws IOException {
        try (GuestMemory bigger = GuestMemory.create(2 * SIZE, EnumSet.of(Flag.MMAP, Flag.INIT_SHARED))) {
            Binding b = bigger.bind(Attack2Fixture.OWNER, 0, 2 * SIZE);
            assertThatThrownBy(() -> Snapshot.restore(b, key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard()))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThat(bigger.pageCounts().allocated()).isZero();
        }
        try (GuestMemory used = Attack2Fixture.newFile()) {
            try (HostMapping m = used.map(0, SIZE)) {
                m.write(3 * PAGE, new byte[] {1, 2, 3});
            }
            State before = Attack2Fixture.state(used);
            assertThatThrownBy(() -> Snapshot.restore(Attack2Fixture.bindingOf(used), key, new ByteArrayInputStream(good),
                    new Snapshot.ReplayGuard()))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThat(Attack2Fixture.state(used)).isEqualTo(before);
        }
        try (GuestMemory half = Attack2Fixture.newFile()) {
            Binding b = half.bind(Attack2Fixture.OWNER, 0, SIZE / 2);
            assertThatThrownBy(() -> Snapshot.restore(b, key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard()))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThatThrownBy(() -> Snapshot.restore(List.of(b, b), key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard()))
                    .as("one binding twice")
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThat(half.pageCounts().allocated()).isZero();
        }
        assertThatThrownBy(() -> Snapshot.restore((Binding) null, key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard()))
                .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        GuestMemory closed = Attack2Fixture.newFile();
        Binding cb = closed.bind(Attack2Fixture.OWNER, 0, SIZE);
        closed.close();
        Throwable t = catchThrowable(() -> Snapshot.restore(cb, key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard()));
        assertThat(t).as("restore into a closed file").isInstanceOf(GuestMemoryException.class);
    }

    @Test
    void aReaderRestoresOnceAndVerifyAfterRestoreIsRefused() throws IOException {
        try (GuestMemory target = Attack2Fixture.newFile(); GuestMemory second = Attack2Fixture.newFile()) {
            Snapshot.Reader r = Snapshot.reader(key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard());
            r.restore(List.of(Attack2Fixture.bindingOf(target)), s -> {
            });
            assertThatThrownBy(() -> r.restore(List.of(Attack2Fixture.bindingOf(second)), s -> {
            })).isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThatThrownBy(() -> r.verify(s -> {
            })).isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThatThrownBy(r::readState).isInstanceOfSatisfying(GuestMemoryException.class,
                    e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThat(second.pageCounts().allocated()).isZero();
        }
    }

    @Test
    void aStreamThatFailsToBeReadMidwayLeavesTheTargetAsItWas() {
        int failAt = recs.get(3).start() + 20;
        InputStream failing = new InputStream() {
            int at;

            @Override
            public int read() throws IOException {
                if (at >= failAt) {
                    throw new IOException("the disk went away");
                }
                return good[at++] & 0xff;
            }
        };
        try (GuestMemory target = Attack2Fixture.newFile()) {
            State before = Attack2Fixture.state(target);
            Throwable t = catchThrowable(() -> Snapshot.restore(Attack2Fixture.bindingOf(target), key, failing, new Snapshot.ReplayGuard()));
            assertThat(t).isInstanceOf(IOException.class);
            assertThat(Attack2Fixture.state(target)).isEqualTo(before);
            assertThat(target.pageCounts().allocated()).isZero();
        }
    }

    /** The target is closed from another thread while the restore waits for the rest of the stream. */
    @Test
    void closingTheTargetDuringARestoreNeitherHangsNorCrashes() throws Exception {
        int gateAt = recs.get(4).start() + 5;
        CountDownLatch reached = new CountDownLatch(1);
        CountDownLatch open = new CountDownLatch(1);
        InputStream gated = new InputStream() {
            int at;

            @Override
            public int read() throws IOException {
                if (at == gateAt) {
                    reached.countDown();
                    try {
                        if (!open.await(20, TimeUnit.SECONDS)) {
                            throw new IOException("gate never opened");
                        }
                    } catch (InterruptedException e) {
                        throw new IOException(e);
                    }
                }
                return at < good.length ? good[at++] & 0xff : -1;
            }
        };
        GuestMemory target = Attack2Fixture.newFile();
        Binding b = Attack2Fixture.bindingOf(target);
        CompletableFuture<Void> restore = CompletableFuture.runAsync(() -> {
            try {
                Snapshot.restore(b, key, gated, new Snapshot.ReplayGuard());
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }, Attack2Fixture.THREADS);
        assertThat(reached.await(20, TimeUnit.SECONDS)).isTrue();
        CompletableFuture<Void> close = CompletableFuture.runAsync(target::close, Attack2Fixture.THREADS);
        Thread.sleep(200);
        open.countDown();
        Throwable closeFailure = catchThrowable(() -> close.get(30, TimeUnit.SECONDS));
        Throwable restoreFailure = catchThrowable(() -> restore.get(30, TimeUnit.SECONDS));
        assertThat(closeFailure).as("close").isNull();
        assertThat(target.isClosed()).isTrue();
        if (restoreFailure != null) {
            java.io.StringWriter sw = new java.io.StringWriter();
            restoreFailure.getCause().printStackTrace(new java.io.PrintWriter(sw));
            assertThat(restoreFailure.getCause()).as("the restore's failure: " + sw).isInstanceOf(GuestMemoryException.class);
        }
    }
}
