package dev.guestmemfd;

import dev.guestmemfd.testing.ForwardingPageSource;
import static dev.guestmemfd.LazyRestoreTest.SECRET;
import static dev.guestmemfd.LazyRestoreTest.WAIT;
import static dev.guestmemfd.LazyRestoreTest.bytes;
import static dev.guestmemfd.LazyRestoreTest.nativeRead;
import static dev.guestmemfd.LazyRestoreTest.target;
import static dev.guestmemfd.SnapshotFixtures.PAGE;
import static dev.guestmemfd.SnapshotFixtures.flags;
import static dev.guestmemfd.SnapshotFixtures.key;
import static dev.guestmemfd.SnapshotFixtures.page;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;

import dev.guestmemfd.linux.LinuxException;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.Pipe;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.DigestOutputStream;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Lazy restore from a stream (a pipe from another thread, a process's pipe), and the version 4
 * tag of each shared record, checked before any reader sees its bytes, from a file and from a
 * stream. As in {@link LazyRestoreTest}, no Java code touches a page of the owner's view before
 * it is fetched: pages are read through the library or by system calls.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LazyStreamRestoreTest {
    /**
     * 0 shared data, 1 shared zero but allocated, 2 shared hole, 3 private data, 4 private zero
     * but allocated, 5 private hole, 6..39 shared, each page holding its number (records of 16
     * pages: a record spans several pages).
     */
    static final int PAGES = 40;
    static final Duration STALL = Duration.ofSeconds(10);
    @TempDir
    Path dir;

    /** {@return a one-pass stream ({@link Snapshot#write}: it starts with its layout) of every page state} */
    static byte[] onePass(SecretKey key) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory source = GuestMemory.create(PAGES * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD)) {
            Binding owner = source.bind(new Owner() { }, 0, PAGES * PAGE);
            owner.pages().asSlice(0, PAGE).fill((byte) 0x11);
            source.allocate(PAGE, PAGE);
            source.convert(3 * PAGE, 3 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(3 * PAGE, PAGE).copyFrom(MemorySegment.ofArray(SECRET));
            source.allocate(4 * PAGE, PAGE);
            for (int p = 6; p < PAGES; p++) {
                owner.pages().asSlice(p * PAGE, PAGE).fill((byte) p);
            }
            Snapshot.write(owner, key, out);
        }
        return out.toByteArray();
    }

    /** Checks every page of a target restored from {@link #onePass}: attributes, bytes, holes. */
    static void checkOnePass(GuestMemory target, Binding owner) {
        try (HostMapping host = target.map(0, PAGES * PAGE)) {
            assertThat(host.read(0, (int) PAGE)).containsOnly(0x11);
            assertThat(host.read(PAGE, (int) PAGE)).containsOnly(0);
            assertThat(host.read(2 * PAGE, (int) PAGE)).containsOnly(0);
            for (int p = 6; p < PAGES; p++) {
                assertThat(host.read(p * PAGE, (int) PAGE)).containsOnly(p);
            }
            assertThatThrownBy(() -> host.read(3 * PAGE, (int) PAGE)).isInstanceOf(HostAccessFault.class);
        }
        assertThat(nativeRead(owner.pages().asSlice(3 * PAGE, PAGE))).isEqualTo(SECRET);
        assertThat(nativeRead(owner.pages().asSlice(4 * PAGE, PAGE))).containsOnly(0);
        assertThat(nativeRead(owner.pages().asSlice(5 * PAGE, PAGE))).containsOnly(0);
        assertThat(target.attribute(2 * PAGE)).isEqualTo(Attribute.SHARED);
        assertThat(target.attribute(3 * PAGE)).isEqualTo(Attribute.PRIVATE);
        assertThat(target.attribute(5 * PAGE)).isEqualTo(Attribute.PRIVATE);
        assertThat(target.attribute(6 * PAGE)).isEqualTo(Attribute.SHARED);
    }

    /**
     * Writes a stream into a real pipe from its own thread: up to {@code holdAt} bytes, then it
     * closes the pipe there ({@code cut}) or waits for {@link #release} before the rest.
     */
    static final class Feeder implements AutoCloseable {
        final Pipe pipe = Pipe.open();
        final CountDownLatch release = new CountDownLatch(1);
        final Thread thread;

        Feeder(byte[] stream, int holdAt, boolean cut) throws IOException {
            thread = Thread.ofPlatform().daemon().name("test-feeder").start(() -> {
                try (var sink = pipe.sink()) {
                    write(sink, stream, 0, holdAt);
                    if (cut) {
                        return;
                    }
                    release.await();
                    write(sink, stream, holdAt, stream.length);
                } catch (IOException | InterruptedException e) {
                    // the reader went away: the test says what that means
                }
            });
        }

        Feeder(byte[] stream) throws IOException {
            this(stream, stream.length, false);
            release.countDown();
        }

        private static void write(Pipe.SinkChannel sink, byte[] stream, int from, int to) throws IOException {
            ByteBuffer b = ByteBuffer.wrap(stream, from, to - from);
            while (b.hasRemaining()) {
                sink.write(b);
            }
        }

        InputStream input() {
            return Channels.newInputStream(pipe.source());
        }

        @Override
        public void close() throws IOException {
            release.countDown();
            pipe.sink().close();
            try {
                thread.join(TimeUnit.SECONDS.toMillis(10));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** A source whose {@link #verify} waits until released: time between the reads and the end check. */
    static final class HeldVerify extends ForwardingPageSource {
        final CountDownLatch release = new CountDownLatch(1);

        HeldVerify(PageSource inner) {
            super(inner);
        }

        @Override
        public void verify() throws IOException {
            try {
                release.await(WAIT.toSeconds(), TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            inner.verify();
        }
    }

    /** {@return the record of {@code records} of {@code kind} whose pages hold {@code page}} */
    static SnapshotMutationTest.Record recordOf(byte[] stream, int kind, int page) {
        for (SnapshotMutationTest.Record r : SnapshotMutationTest.parse(stream)) {
            ByteBuffer b = ByteBuffer.wrap(stream);
            long offset = b.getLong(r.start() + 1);
            int length = b.getInt(r.start() + 9);
            if (r.kind() == kind && offset <= page * PAGE && page * PAGE < offset + length) {
                return r;
            }
        }
        throw new AssertionError("no record of kind " + kind + " holds page " + page);
    }

    /** {@return the stream with one byte of page {@code page}'s bytes in its shared record flipped} */
    static byte[] flipSharedByte(byte[] stream, int page) {
        SnapshotMutationTest.Record r = recordOf(stream, SnapshotFormat.SHARED, page);
        long offset = ByteBuffer.wrap(stream).getLong(r.start() + 1);
        byte[] altered = stream.clone();
        altered[(int) (r.body() + page * PAGE - offset + 7)] ^= 0x40;
        return altered;
    }

    /**
     * {@return a version 4 stream without a layout, written as version 3: the same records
     * without the shared records' tags, the digest and its seal made again}
     */
    static byte[] asVersion3(byte[] v4, SecretKey key) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        MessageDigest digest = SnapshotFormat.sha256();
        DataOutputStream data = new DataOutputStream(new DigestOutputStream(out, digest));
        byte[] header = Arrays.copyOf(v4, SnapshotFormat.HEADER_BYTES);
        ByteBuffer.wrap(header).putInt(SnapshotFormat.MAGIC.length, 3);
        byte[] streamId = Arrays.copyOfRange(header, SnapshotFormat.HEADER_BYTES - SnapshotFormat.STREAM_ID_BYTES,
                SnapshotFormat.HEADER_BYTES);
        data.write(header);
        List<SnapshotMutationTest.Record> records = SnapshotMutationTest.parse(v4);
        for (SnapshotMutationTest.Record r : records) {
            assertThat(r.kind()).isNotEqualTo(SnapshotFormat.LAYOUT);
            int end = r.kind() == SnapshotFormat.SHARED ? r.end() - SnapshotFormat.TAG_BYTES : r.end();
            data.write(v4, r.start(), end - r.start());
        }
        data.writeByte(SnapshotFormat.END);
        data.writeLong(records.size());
        data.flush();
        byte[] sum = digest.digest();
        out.write(SnapshotFormat.seal(key, streamId, SnapshotFormat.TRAILER_RECORD, SnapshotFormat.END, records.size(),
                sum, sum.length));
        return out.toByteArray();
    }

    static Errno errnoOf(Throwable t) {
        assertThat(t).isInstanceOf(GuestMemoryException.class);
        return ((GuestMemoryException) t).errno();
    }

    @Test
    void everyPageStateRoundTripsLazilyFromAPipeUsableBeforeItsPagesArrive() throws Exception {
        SecretKey key = key();
        byte[] stream = onePass(key);
        SnapshotMutationTest.Record layout = SnapshotMutationTest.parse(stream).getFirst();
        assertThat(layout.kind()).isEqualTo(SnapshotFormat.LAYOUT);
        try (Feeder feeder = new Feeder(stream, layout.end(), false); GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            // Opens with only the header and the layout sent: the pipe holds nothing more yet.
            PageSource source = PageSource.open(feeder.input(), key, new Snapshot.ReplayGuard(), STALL);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                assertThat(restore.eagerReason()).isEmpty();
                assertThat(target.attribute(3 * PAGE)).isEqualTo(Attribute.PRIVATE);
                assertThat(target.attribute(6 * PAGE)).isEqualTo(Attribute.SHARED);
                // holes are answered while no page byte has arrived
                assertThat(nativeRead(owner.pages().asSlice(2 * PAGE, PAGE))).containsOnly(0);
                assertThat(nativeRead(owner.pages().asSlice(5 * PAGE, PAGE))).containsOnly(0);
                // a page with bytes waits for the stream
                CompletableFuture<byte[]> waiting = CompletableFuture.supplyAsync(
                        () -> nativeRead(owner.pages().asSlice(3 * PAGE, PAGE)));
                assertThat(waiting.isDone()).isFalse();
                assertThat(restore.isComplete()).isFalse();
                feeder.release.countDown();
                assertThat(waiting.get(60, TimeUnit.SECONDS)).isEqualTo(SECRET);
                assertThat(restore.await(WAIT)).isTrue();
                checkOnePass(target, owner);
                // 0, 1, 3, 4 and 6..39 have bytes: each fetched once
                assertThat(restore.stats().pagesFetched()).isEqualTo(PAGES - 6 + 4);
            }
        }
    }

    @Test
    void aProcessPipeRestoresLazily() throws Exception {
        SecretKey key = key();
        Path file = dir.resolve("one-pass.gmem");
        Files.write(file, onePass(key));
        Process cat = new ProcessBuilder("cat", file.toString()).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        try (GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            PageSource source = PageSource.open(cat.getInputStream(), key, new Snapshot.ReplayGuard(), STALL);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                checkOnePass(target, owner);
                assertThat(restore.await(WAIT)).isTrue();
            }
        } finally {
            assertThat(cat.waitFor(60, TimeUnit.SECONDS)).isTrue();
        }
    }

    /** A pre-copy stream of two rounds has no layout: the source opens at its end, and then restores every state. */
    @Test
    void aStreamWithoutALayoutOpensAtItsEndAndRestores() throws Exception {
        SecretKey key = key();
        byte[] stream = Files.readAllBytes(LazyRestoreTest.everyState(dir, key));
        assertThat(SnapshotMutationTest.parse(stream).getFirst().kind()).isNotEqualTo(SnapshotFormat.LAYOUT);
        checkEveryStateFromAStream(stream, key);
        checkEveryStateFromAStream(asVersion3(stream, key), key);
    }

    private static void checkEveryStateFromAStream(byte[] stream, SecretKey key) throws Exception {
        int pages = LazyRestoreTest.PAGES;
        try (Feeder feeder = new Feeder(stream); GuestMemory target = target(pages)) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            PageSource source = PageSource.open(feeder.input(), key, new Snapshot.ReplayGuard(), STALL);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                assertThat(restore.await(WAIT)).isTrue();
                try (HostMapping host = target.map(0, pages * PAGE)) {
                    assertThat(host.read(0, (int) PAGE)).containsOnly(0x11);
                    assertThat(host.read(6 * PAGE, (int) PAGE)).containsOnly(0x66);
                    assertThat(host.read(7 * PAGE, (int) PAGE)).containsOnly(0);
                }
                assertThat(bytes(owner.pages().asSlice(3 * PAGE, PAGE))).isEqualTo(SECRET);
                assertThat(target.attribute(6 * PAGE)).isEqualTo(Attribute.SHARED);
                assertThat(target.attribute(3 * PAGE)).isEqualTo(Attribute.PRIVATE);
            }
        }
    }

    /** Version 3 still reads: eagerly, lazily from a file (its shared bytes checked at the end only) and from a stream. */
    @Test
    void aVersion3FileStillRestoresEagerlyAndLazily() throws Exception {
        SecretKey key = key();
        byte[] v3 = asVersion3(Files.readAllBytes(LazyRestoreTest.everyState(dir, key)), key);
        assertThat(ByteBuffer.wrap(v3).getInt(SnapshotFormat.MAGIC.length)).isEqualTo(3);
        int pages = LazyRestoreTest.PAGES;
        try (GuestMemory target = target(pages)) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            Snapshot.restore(owner, key, new ByteArrayInputStream(v3), new Snapshot.ReplayGuard());
            try (HostMapping host = target.map(0, pages * PAGE)) {
                assertThat(host.read(6 * PAGE, (int) PAGE)).containsOnly(0x66);
            }
            assertThat(bytes(owner.pages().asSlice(3 * PAGE, PAGE))).isEqualTo(SECRET);
        }
        Path file = dir.resolve("v3.gmem");
        Files.write(file, v3);
        try (GuestMemory target = target(pages); PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                assertThat(restore.await(WAIT)).isTrue();
                try (HostMapping host = target.map(0, pages * PAGE)) {
                    assertThat(host.read(0, (int) PAGE)).containsOnly(0x11);
                    assertThat(host.read(6 * PAGE, (int) PAGE)).containsOnly(0x66);
                }
            }
        }
        // version 3 has no tag: an altered shared byte is caught by the digest, at the end
        assertThat(v3[SnapshotFormat.HEADER_BYTES]).isEqualTo((byte) SnapshotFormat.SHARED);
        byte[] altered = v3.clone();
        altered[SnapshotFormat.HEADER_BYTES + SnapshotFormat.RECORD_HEADER_BYTES + 7] ^= 0x40;
        Files.write(file, altered);
        try (GuestMemory target = target(pages); PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                assertThat(errnoOf(catchThrowable(() -> restore.await(WAIT)))).isEqualTo(Errno.EBADMSG);
            }
        }
    }

    /**
     * An altered shared byte in a file is refused at the page's first read (EBADMSG), while the
     * digest at the end is not checked yet: no reader, host or native, ever gets the bytes.
     */
    @Test
    void anAlteredSharedByteInAFileIsRefusedAtItsFirstRead() throws Exception {
        SecretKey key = key();
        Path file = dir.resolve("altered.gmem");
        Files.write(file, flipSharedByte(onePass(key), 20));
        try (GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            HeldVerify source = new HeldVerify(PageSource.open(file, key, new Snapshot.ReplayGuard()));
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                 HostMapping host = target.map(0, PAGES * PAGE)) {
                Throwable refused = catchThrowable(() -> host.read(20 * PAGE, (int) PAGE));
                assertThat(errnoOf(refused)).isEqualTo(Errno.EBADMSG);
                assertThat(catchThrowable(() -> nativeRead(owner.pages().asSlice(20 * PAGE, PAGE))))
                        .isInstanceOf(LinuxException.class);
                assertThat(restore.failure()).isPresent();
                source.release.countDown();
                assertThat(errnoOf(catchThrowable(() -> restore.await(WAIT)))).isEqualTo(Errno.EBADMSG);
            }
        }
    }

    /** The same from a stream: the stream is held after the altered record, before its end. */
    @Test
    void anAlteredSharedByteInAStreamIsRefusedBeforeAnyReaderSeesIt() throws Exception {
        SecretKey key = key();
        byte[] stream = onePass(key);
        byte[] altered = flipSharedByte(stream, 20);
        SnapshotMutationTest.Record r = recordOf(stream, SnapshotFormat.SHARED, 20);
        try (Feeder feeder = new Feeder(altered, r.end(), false); GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            PageSource source = PageSource.open(feeder.input(), key, new Snapshot.ReplayGuard(), STALL);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                 HostMapping host = target.map(0, PAGES * PAGE)) {
                assertThat(errnoOf(catchThrowable(() -> host.read(20 * PAGE, (int) PAGE)))).isEqualTo(Errno.EBADMSG);
                assertThat(catchThrowable(() -> nativeRead(owner.pages().asSlice(20 * PAGE, PAGE))))
                        .isInstanceOf(LinuxException.class);
                assertThat(errnoOf(catchThrowable(() -> restore.await(WAIT)))).isEqualTo(Errno.EBADMSG);
            }
        }
    }

    /** Two shared records swapped, or a record of another stream (same key) in a record's place: refused at the read. */
    @Test
    void aSwappedOrForeignSharedRecordIsRefusedAtItsFirstRead() throws Exception {
        SecretKey key = key();
        byte[] stream = onePass(key);
        SnapshotMutationTest.Record a = recordOf(stream, SnapshotFormat.SHARED, 6);
        SnapshotMutationTest.Record b = recordOf(stream, SnapshotFormat.SHARED, 22);
        assertThat(b.start()).isEqualTo(a.end());
        assertThat(b.end() - b.start()).isEqualTo(a.end() - a.start());
        byte[] swapped = stream.clone();
        System.arraycopy(stream, b.start(), swapped, a.start(), b.end() - b.start());
        System.arraycopy(stream, a.start(), swapped, a.start() + (b.end() - b.start()), a.end() - a.start());
        byte[] other = onePass(key);  // the same pages, another stream id
        byte[] foreign = stream.clone();
        System.arraycopy(other, a.start(), foreign, a.start(), a.end() - a.start());
        for (byte[] bad : List.of(swapped, foreign)) {
            Path file = dir.resolve("bad.gmem");
            Files.write(file, bad);
            try (GuestMemory target = target(PAGES)) {
                Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
                HeldVerify source = new HeldVerify(PageSource.open(file, key, new Snapshot.ReplayGuard()));
                try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                     HostMapping host = target.map(0, PAGES * PAGE)) {
                    assertThat(errnoOf(catchThrowable(() -> host.read(6 * PAGE, (int) PAGE)))).isEqualTo(Errno.EBADMSG);
                    assertThat(restore.failure()).isPresent();
                    source.release.countDown();
                }
            }
            try (Feeder feeder = new Feeder(bad); GuestMemory target = target(PAGES)) {
                Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
                PageSource source = PageSource.open(feeder.input(), key, new Snapshot.ReplayGuard(), STALL);
                try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                     HostMapping host = target.map(0, PAGES * PAGE)) {
                    assertThat(errnoOf(catchThrowable(() -> host.read(6 * PAGE, (int) PAGE)))).isEqualTo(Errno.EBADMSG);
                    assertThat(errnoOf(catchThrowable(() -> restore.await(WAIT)))).isEqualTo(Errno.EBADMSG);
                }
            }
        }
    }

    /** A record replayed (sent twice) breaks the layout's promise: refused, by the file's index and by the stream. */
    @Test
    void aReplayedRecordIsRefused() throws Exception {
        SecretKey key = key();
        byte[] stream = onePass(key);
        SnapshotMutationTest.Record a = recordOf(stream, SnapshotFormat.SHARED, 6);
        ByteArrayOutputStream twice = new ByteArrayOutputStream();
        twice.write(stream, 0, a.end());
        twice.write(stream, a.start(), a.end() - a.start());
        twice.write(stream, a.end(), stream.length - a.end());
        byte[] replayed = twice.toByteArray();
        Path file = dir.resolve("replayed.gmem");
        Files.write(file, replayed);
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(file, key, new Snapshot.ReplayGuard()))))
                .isEqualTo(Errno.EBADMSG);
        try (GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            assertThat(errnoOf(catchThrowable(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(replayed),
                    new Snapshot.ReplayGuard())))).isEqualTo(Errno.EBADMSG);
            assertThat(target.pageRuns()).allMatch(run -> !run.allocated());
        }
        try (Feeder feeder = new Feeder(replayed); GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            PageSource source = PageSource.open(feeder.input(), key, new Snapshot.ReplayGuard(), STALL);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                assertThat(errnoOf(catchThrowable(() -> restore.await(WAIT)))).isEqualTo(Errno.EBADMSG);
            }
        }
    }

    /** The stream is cut in the middle: threads blocked on lost pages get an error, nobody hangs. */
    @Test
    void aCutStreamFailsBlockedReadersWithAClearError() throws Exception {
        checkBrokenStream(true, STALL, Errno.EBADMSG);
    }

    /** The sender stops sending but keeps the pipe open: after the stall timeout, the same. */
    @Test
    void aStalledStreamFailsBlockedReadersInBoundedTime() throws Exception {
        checkBrokenStream(false, Duration.ofSeconds(1), Errno.EIO);
    }

    private static void checkBrokenStream(boolean cut, Duration stall, Errno expected) throws Exception {
        SecretKey key = key();
        byte[] stream = onePass(key);
        SnapshotMutationTest.Record middle = recordOf(stream, SnapshotFormat.SHARED, 22);
        try (Feeder feeder = new Feeder(stream, middle.start() + 100, cut); GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            PageSource source = PageSource.open(feeder.input(), key, new Snapshot.ReplayGuard(), stall);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                 HostMapping host = target.map(0, PAGES * PAGE)) {
                List<Throwable> heard = new java.util.concurrent.CopyOnWriteArrayList<>();
                CountDownLatch told = new CountDownLatch(1);
                restore.onFailure(t -> {
                    heard.add(t);
                    told.countDown();
                });
                CompletableFuture<Object> nativeSide = CompletableFuture.supplyAsync(() -> {
                    try {
                        return nativeRead(owner.pages().asSlice((PAGES - 1) * PAGE, PAGE));
                    } catch (LinuxException e) {
                        return e;
                    }
                });
                Throwable hostFailure = catchThrowable(() -> host.read((PAGES - 2) * PAGE, (int) PAGE));
                assertThat(errnoOf(hostFailure)).isEqualTo(expected);
                assertThat(nativeSide.get(60, TimeUnit.SECONDS)).isInstanceOf(LinuxException.class);
                assertThat(errnoOf(catchThrowable(() -> restore.await(WAIT)))).isEqualTo(expected);
                // listeners run after the failure is visible to waiters: wait for them (bounded)
                assertThat(told.await(60, TimeUnit.SECONDS)).isTrue();
                assertThat(heard).hasSize(1);
                // pages that arrived before the break were checked and stay; the file refuses access now
                assertThat(errnoOf(catchThrowable(() -> host.read(0, (int) PAGE)))).isEqualTo(expected);
            }
        }
    }

    @Test
    void badArgumentsWrongKeysAndReplaysAreRefused() throws Exception {
        SecretKey key = key();
        byte[] stream = onePass(key);
        Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
        assertThat(errnoOf(catchThrowable(() -> PageSource.open((InputStream) null, key, guard, STALL)))).isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(new ByteArrayInputStream(stream), null, guard, STALL))))
                .isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(new ByteArrayInputStream(stream), key, null, STALL))))
                .isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(new ByteArrayInputStream(stream), key, guard, Duration.ZERO))))
                .isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(new ByteArrayInputStream(stream), key(), guard, STALL))))
                .isEqualTo(Errno.EBADMSG);
        assertThat(errnoOf(catchThrowable(() -> PageSource.open(new ByteArrayInputStream(new byte[10]), key, guard, STALL))))
                .isEqualTo(Errno.EBADMSG);
        try (PageSource first = PageSource.open(new ByteArrayInputStream(stream), key, guard, STALL)) {
            assertThat(first.fileSize()).isEqualTo(PAGES * PAGE);
            assertThat(errnoOf(catchThrowable(() -> PageSource.open(new ByteArrayInputStream(stream), key, guard, STALL))))
                    .isEqualTo(Errno.EALREADY);
        }
        // a target of another size, or one holding memory, is refused and left as it was
        try (GuestMemory small = target(PAGES - 1);
             PageSource source = PageSource.open(new ByteArrayInputStream(stream), key, new Snapshot.ReplayGuard(), STALL)) {
            Binding owner = small.bind(new Owner() { }, 0, (PAGES - 1) * PAGE);
            assertThat(errnoOf(catchThrowable(() -> LazyRestore.start(List.of(owner), source, s -> { }))))
                    .isEqualTo(Errno.EINVAL);
            assertThat(small.pageRuns()).allMatch(run -> !run.allocated() && run.attribute() == Attribute.SHARED);
        }
        // bytes after the end are refused
        byte[] longer = Arrays.copyOf(stream, stream.length + 1);
        try (GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            PageSource source = PageSource.open(new ByteArrayInputStream(longer), key, new Snapshot.ReplayGuard(), STALL);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                assertThat(errnoOf(catchThrowable(() -> restore.await(WAIT)))).isEqualTo(Errno.EBADMSG);
            }
        }
    }

    /**
     * The hostile kit, lazily from a stream: every byte outside page bodies of a one-pass
     * stream, and a seeded sample inside them, flipped; a sample of cuts. Each attempt is
     * refused: at open, at start (a flipped file size names another file: {@code EINVAL}, or
     * one past 8 TiB: {@code EFBIG}), or by the restore, which never completes.
     */
    @Test
    void everyFlippedOrCutStreamIsRefusedLazily() throws Exception {
        SecretKey key = key();
        byte[] stream = onePass(key);
        long seed = Long.getLong("gmem.kit.seed", System.nanoTime());
        System.out.println("LazyStreamRestoreTest kit seed " + seed + " (-Dgmem.kit.seed=" + seed + " replays it)");
        java.util.Random random = new java.util.Random(seed);
        java.util.BitSet positions = new java.util.BitSet();
        positions.set(0, stream.length);
        List<int[]> bodies = new java.util.ArrayList<>();
        for (SnapshotMutationTest.Record r : SnapshotMutationTest.parse(stream)) {
            if (SnapshotFormat.carriesPages(r.kind())) {
                positions.clear(r.body(), r.end() - SnapshotFormat.TAG_BYTES);
                bodies.add(new int[] {r.body(), r.end() - SnapshotFormat.TAG_BYTES});
            }
        }
        for (int i = 0; i < 64; i++) {
            int[] body = bodies.get(random.nextInt(bodies.size()));
            positions.set(body[0] + random.nextInt(body[1] - body[0]));
        }
        int fileSizeField = SnapshotFormat.MAGIC.length + 4;
        int attempts = 0;
        for (int i = positions.nextSetBit(0); i >= 0; i = positions.nextSetBit(i + 1)) {
            byte[] altered = stream.clone();
            int mask = 1 << random.nextInt(8);
            altered[i] ^= (byte) mask;
            boolean namesAnotherFile = i >= fileSizeField && i < fileSizeField + 8;
            refusedLazily("byte " + i + " ^ " + mask, altered, key, namesAnotherFile);
            attempts++;
        }
        for (int cut = 0; cut < stream.length; cut += 1 + random.nextInt(2048)) {
            refusedLazily("cut at " + cut, Arrays.copyOf(stream, cut), key, false);
            attempts++;
        }
        System.out.println("LazyStreamRestoreTest kit: " + attempts + " attempts refused over a " + stream.length
                + "-byte stream");
    }

    private static void refusedLazily(String what, byte[] stream, SecretKey key, boolean mayNameAnotherFile) throws Exception {
        PageSource source;
        try {
            source = PageSource.open(new ByteArrayInputStream(stream), key, new Snapshot.ReplayGuard(), STALL);
        } catch (GuestMemoryException e) {
            // a file size past 8 TiB is refused as too big to index
            assertThat(e.errno()).as(what).isIn(mayNameAnotherFile ? List.of(Errno.EFBIG, Errno.EBADMSG) : List.of(Errno.EBADMSG));
            return;
        }
        try (GuestMemory target = target(PAGES)) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            LazyRestore restore;
            try {
                restore = LazyRestore.start(List.of(owner), source, s -> { });
            } catch (GuestMemoryException e) {
                source.close();
                assertThat(e.errno()).as(what).isIn(mayNameAnotherFile ? List.of(Errno.EINVAL, Errno.EBADMSG) : List.of(Errno.EBADMSG));
                return;
            }
            try (restore) {
                Throwable t = catchThrowable(() -> restore.await(WAIT));
                assertThat(t).as(what + ": the restore completed").isNotNull();
                assertThat(errnoOf(t)).as(what).isEqualTo(Errno.EBADMSG);
            }
        }
    }

    /** Owner state records before the layout reach the receiver at start, opened. */
    @Test
    void ownerStateBeforeTheLayoutIsHandedOverAtStart() throws Exception {
        SecretKey key = key();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory source = GuestMemory.create(4 * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD)) {
            Binding owner = source.bind(new Owner() { }, 0, 4 * PAGE);
            owner.pages().asSlice(0, PAGE).fill((byte) 9);
            SnapshotWriter writer = (SnapshotWriter) Snapshot.writer(List.of(owner), key, out);
            writer.writeState(page(0x5a));
            writer.writeSnapshot();
            writer.finish();
        }
        try (Feeder feeder = new Feeder(out.toByteArray()); GuestMemory target = target(4)) {
            Binding owner = target.bind(new Owner() { }, 0, 4 * PAGE);
            List<byte[]> states = new java.util.ArrayList<>();
            PageSource source = PageSource.open(feeder.input(), key, new Snapshot.ReplayGuard(), STALL);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, states::add)) {
                assertThat(states).hasSize(1);
                assertThat(states.getFirst()).isEqualTo(page(0x5a));
                assertThat(restore.await(WAIT)).isTrue();
                try (HostMapping host = target.map(0, PAGE)) {
                    assertThat(host.read(0, (int) PAGE)).containsOnly(9);
                }
            }
        }
    }
}
