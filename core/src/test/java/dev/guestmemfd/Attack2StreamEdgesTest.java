package dev.guestmemfd;

import static dev.guestmemfd.Attack2Fixture.HEADER;
import static dev.guestmemfd.Attack2Fixture.PAGE;
import static dev.guestmemfd.Attack2Fixture.SIZE;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowable;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.TimeUnit;

import javax.crypto.SecretKey;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import dev.guestmemfd.Attack2Fixture.Rec;

/**
 * Stream edges: headers naming huge, negative or unaligned files (read without a target, or
 * indexed by {@link PageSource#open}: none may allocate by the header's word), owner state
 * records altered, and writers misused.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class Attack2StreamEdgesTest {
    static SecretKey key;
    static GuestMemory source;
    static byte[] good;
    static byte[] withState;

    @TempDir
    static Path dir;

    @BeforeAll
    static void makeStreams() throws IOException {
        key = Attack2Fixture.key();
        source = Attack2Fixture.source();
        good = Attack2Fixture.stream(source, key);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Snapshot.Writer w = Snapshot.writer(List.of(Attack2Fixture.bindingOf(source)), key, out);
        w.writeState("the owner's registers".getBytes(java.nio.charset.StandardCharsets.UTF_8));
        w.writeAll();
        w.finish();
        withState = out.toByteArray();
    }

    @AfterAll
    static void closeSource() {
        source.close();
    }

    static Errno errnoOf(Throwable t) {
        Throwable c = t;
        while (c != null && !(c instanceof GuestMemoryException)) {
            c = c.getCause();
        }
        assertThat(c).as("a GuestMemoryException in " + t).isNotNull();
        return ((GuestMemoryException) c).errno();
    }

    static byte[] withFileSize(byte[] s, long size) {
        byte[] c = s.clone();
        ByteBuffer.wrap(c).putLong(12, size);
        return c;
    }

    static final long[] SIZES = {0, -PAGE, Long.MIN_VALUE, Long.MAX_VALUE, Long.MAX_VALUE & -PAGE, 1L << 43, (1L << 43) + PAGE, 1L << 42,
        1L << 40, 1L << 36, SIZE + 1, 1};

    @Test
    void verifyOfHeadersNamingOtherFileSizesFailsWithoutEatingTheHeap() {
        for (long size : SIZES) {
            byte[] s = withFileSize(good, size);
            Throwable t = catchThrowable(() -> Snapshot.reader(key, new ByteArrayInputStream(s), new Snapshot.ReplayGuard()).verify(x -> {
            }));
            assertThat(t).as("size " + size).isNotNull();
            assertThat(errnoOf(t)).as("size " + size + ": " + t).isIn(Errno.EBADMSG, Errno.EFBIG);
        }
    }

    @Test
    void openOfFilesWhoseHeaderNamesOtherSizesFailsWithoutEatingTheHeap() throws IOException {
        for (long size : SIZES) {
            Path f = Files.createTempFile(dir, "snap", ".gmem");
            Files.write(f, withFileSize(good, size));
            Throwable t = catchThrowable(() -> {
                PageSource s = PageSource.open(f, key, new Snapshot.ReplayGuard());
                try (GuestMemory target = Attack2Fixture.newFile(); LazyRestore r = LazyRestore.start(List.of(Attack2Fixture.bindingOf(target)), s,
                        x -> {
                        })) {
                    r.await(Duration.ofSeconds(20));
                } finally {
                    s.close();
                }
            });
            assertThat(t).as("size " + size).isNotNull();
            assertThat(errnoOf(t)).as("size " + size + ": " + t).isIn(Errno.EBADMSG, Errno.EFBIG, Errno.EINVAL);
        }
    }

    /**
     * A 20 KB snapshot file whose unauthenticated header claims a 4 TiB file: opening it must not
     * hold memory in proportion to the claim before anything is authenticated. Measured as the
     * heap in use after a collection while the source is open; the bound is 64 MiB.
     */
    @Test
    void openDoesNotAllocateByTheHeadersWord() throws IOException {
        Path f = Files.createTempFile(dir, "snap", ".gmem");
        Files.write(f, withFileSize(good, 1L << 42));
        Runtime rt = Runtime.getRuntime();
        System.gc();
        long before = rt.totalMemory() - rt.freeMemory();
        long t0 = System.nanoTime();
        PageSource s = null;
        try {
            s = PageSource.open(f, key, new Snapshot.ReplayGuard());
        } catch (GuestMemoryException refused) {
            // refusing it outright is right too
            assertThat(refused.errno()).isIn(Errno.EBADMSG, Errno.EFBIG);
            return;
        } catch (OutOfMemoryError oom) {
            throw new AssertionError("open ran out of heap for a 20 KB file claiming 4 TiB", oom);
        }
        try {
            System.gc();
            long held = rt.totalMemory() - rt.freeMemory() - before;
            assertThat(held).as("heap held by a source open on a 20 KB file that claims 4 TiB (open took "
                    + (System.nanoTime() - t0) / 1_000_000 + " ms)").isLessThan(64L << 20);
        } finally {
            s.close();
        }
    }

    @Test
    void restoreIntoAFileOfTheForgedSizeIsRefused() {
        // a header that says twice the size, into a file of twice the size: the forgery shows at the end
        byte[] s = withFileSize(good, 2 * SIZE);
        try (GuestMemory target = GuestMemory.create(2 * SIZE, java.util.EnumSet.of(Flag.MMAP, Flag.INIT_SHARED))) {
            Binding b = target.bind(Attack2Fixture.OWNER, 0, 2 * SIZE);
            List<PageRun> before = target.pageRuns();
            Throwable t = catchThrowable(() -> Snapshot.restore(b, key, new ByteArrayInputStream(s), new Snapshot.ReplayGuard()));
            assertThat(errnoOf(t)).isEqualTo(Errno.EBADMSG);
            assertThat(target.pageRuns()).isEqualTo(before);
            assertThat(target.pageCounts().allocated()).isZero();
        }
    }

    @Test
    void ownerStateRecordsAlteredOrMissingAreRefused() throws IOException {
        List<Rec> recs = Attack2Fixture.records(withState);
        Rec state = recs.getFirst();
        assertThat(state.kind()).isEqualTo(5);
        Snapshot.Reader ok = Snapshot.reader(key, new ByteArrayInputStream(withState), new Snapshot.ReplayGuard());
        assertThat(new String(ok.readState(), java.nio.charset.StandardCharsets.UTF_8)).isEqualTo("the owner's registers");
        for (int at : new int[] {state.start(), state.start() + 1, state.start() + 9, state.start() + 12, state.headerEnd(), state.end() - 1}) {
            byte[] s = Attack2Fixture.flip(withState, at);
            Throwable t = catchThrowable(() -> Snapshot.reader(key, new ByteArrayInputStream(s), new Snapshot.ReplayGuard()).readState());
            assertThat(errnoOf(t)).as("flip at " + at).isEqualTo(Errno.EBADMSG);
            Path f = Files.createTempFile(dir, "snap", ".gmem");
            Files.write(f, s);
            Throwable o = catchThrowable(() -> PageSource.open(f, key, new Snapshot.ReplayGuard()).close());
            assertThat(errnoOf(o)).as("open, flip at " + at).isEqualTo(Errno.EBADMSG);
        }
        // no state where one is asked for
        Throwable t = catchThrowable(() -> Snapshot.reader(key, new ByteArrayInputStream(good), new Snapshot.ReplayGuard()).readState());
        assertThat(errnoOf(t)).isEqualTo(Errno.EBADMSG);
        // a stream with state is refused by the plain restore, and leaves the target as it was
        try (GuestMemory target = Attack2Fixture.newFile()) {
            Throwable r = catchThrowable(() -> Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(withState),
                    new Snapshot.ReplayGuard()));
            assertThat(errnoOf(r)).isEqualTo(Errno.EBADMSG);
            assertThat(target.pageCounts().allocated()).isZero();
        }
        // the state record moved after the pages: it no longer opens in its place
        Rec end = recs.getLast();
        byte[] moved = Attack2Fixture.concat(java.util.Arrays.copyOfRange(withState, 0, state.start()),
                java.util.Arrays.copyOfRange(withState, state.end(), end.start()), java.util.Arrays.copyOfRange(withState, state.start(), state.end()),
                java.util.Arrays.copyOfRange(withState, end.start(), withState.length));
        try (GuestMemory target = Attack2Fixture.newFile()) {
            Snapshot.Reader r = Snapshot.reader(key, new ByteArrayInputStream(moved), new Snapshot.ReplayGuard());
            Throwable x = catchThrowable(() -> r.restore(List.of(Attack2Fixture.bindingOf(target)), st -> {
            }));
            assertThat(errnoOf(x)).isEqualTo(Errno.EBADMSG);
            assertThat(target.pageCounts().allocated()).isZero();
        }
    }

    @Test
    void writersRefuseMisuse() throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Snapshot.Writer w = Snapshot.writer(List.of(Attack2Fixture.bindingOf(source)), key, out);
        assertThat(errnoOf(catchThrowable(() -> w.writeState(null)))).isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> w.writeState(new byte[16 * 1024 * 1024 + 1])))).isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> w.writePages(null)))).isEqualTo(Errno.EINVAL);
        BitSet past = new BitSet();
        past.set(Attack2Fixture.PAGES + 5);
        Throwable p = catchThrowable(() -> w.writePages(past));
        if (p != null) {
            assertThat(errnoOf(p)).as("a page past the end").isEqualTo(Errno.EINVAL);
        }
        w.writeAll();
        w.finish();
        w.finish();
        assertThat(errnoOf(catchThrowable(w::writeAll))).isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> w.writePages(new BitSet())))).isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> w.writeState(new byte[1])))).isEqualTo(Errno.EINVAL);
        // what was written still restores, whatever the misuse after it
        try (GuestMemory target = Attack2Fixture.newFile()) {
            Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(out.toByteArray()), new Snapshot.ReplayGuard());
            Attack2Fixture.assertRestored(target);
        }
        // null key or stream; bindings that do not cover the file
        assertThat(errnoOf(catchThrowable(() -> Snapshot.writer(List.of(Attack2Fixture.bindingOf(source)), null, out)))).isEqualTo(Errno.EINVAL);
        assertThat(errnoOf(catchThrowable(() -> Snapshot.writer(List.of(Attack2Fixture.bindingOf(source)), key, null)))).isEqualTo(Errno.EINVAL);
        try (GuestMemory half = Attack2Fixture.newFile()) {
            Binding b = half.bind(Attack2Fixture.OWNER, 0, SIZE / 2);
            assertThat(errnoOf(catchThrowable(() -> Snapshot.write(b, key, new ByteArrayOutputStream())))).isEqualTo(Errno.EINVAL);
            assertThat(errnoOf(catchThrowable(() -> Snapshot.write(List.of(b, b), key, new ByteArrayOutputStream())))).isEqualTo(Errno.EINVAL);
        }
        // a closed file
        GuestMemory closed = Attack2Fixture.source();
        Binding cb = Attack2Fixture.bindingOf(closed);
        closed.close();
        Throwable c = catchThrowable(() -> Snapshot.write(cb, key, new ByteArrayOutputStream()));
        assertThat(c).isInstanceOf(GuestMemoryException.class);
        assertThat(errnoOf(c)).isIn(Errno.EBADF, Errno.EINVAL);
    }

    @Test
    void aStreamOfOnlyAHeaderAndAnEndIsRefusedWhenForged() {
        // a header followed at once by an end record claiming no records: the digest is not sealed with the key
        byte[] forged = Attack2Fixture.concat(java.util.Arrays.copyOf(good, HEADER), new byte[] {0}, new byte[8], new byte[48]);
        try (GuestMemory target = Attack2Fixture.newFile()) {
            Throwable t = catchThrowable(() -> Snapshot.restore(Attack2Fixture.bindingOf(target), key, new ByteArrayInputStream(forged),
                    new Snapshot.ReplayGuard()));
            assertThat(errnoOf(t)).isEqualTo(Errno.EBADMSG);
            assertThat(target.pageCounts().allocated()).isZero();
        }
        assertThat(PAGE).isPositive();
    }
}
