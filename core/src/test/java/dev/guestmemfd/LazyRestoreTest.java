package dev.guestmemfd;

import static dev.guestmemfd.SnapshotFixtures.PAGE;
import static dev.guestmemfd.SnapshotFixtures.flags;
import static dev.guestmemfd.SnapshotFixtures.key;
import static dev.guestmemfd.SnapshotFixtures.page;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.LinuxException;
import dev.guestmemfd.linux.Memfd;
import dev.guestmemfd.testing.GatedPageSource;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Lazy restore against the real kernel: userfaultfd on a memfd, faults raised by system calls
 * (native code, as a vCPU in {@code KVM_RUN} raises them), host access through the library.
 * No Java code in these tests touches a page of the owner's view before it is fetched: that
 * is the hazard the library exists to avoid, and a test doing it would hang the JVM.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LazyRestoreTest {
    static final Duration WAIT = Duration.ofSeconds(60);
    static final byte[] SECRET = page("a private page, sealed in the stream; ".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
    @TempDir
    Path dir;

    /**
     * Pages of every state: 0 shared data, 1 shared zero but allocated, 2 shared hole,
     * 3 private data, 4 private zero but allocated, 5 private hole, 6 sent sealed then in the
     * clear (a pre-copy round after the guest shared it), 7 sent with data then punched.
     */
    static final int PAGES = 8;

    static Path everyState(Path dir, SecretKey key) throws IOException {
        Path file = dir.resolve("every-state.gmem");
        try (GuestMemory source = GuestMemory.create(PAGES * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD);
             ChangeLog changes = source.trackChanges();
             var out = Files.newOutputStream(file)) {
            Binding owner = source.bind(new Owner() { }, 0, PAGES * PAGE);
            owner.pages().asSlice(0, PAGE).fill((byte) 0x11);
            source.allocate(PAGE, PAGE);
            source.convert(3 * PAGE, 3 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(3 * PAGE, PAGE).copyFrom(MemorySegment.ofArray(SECRET));
            source.allocate(4 * PAGE, PAGE);
            source.convert(6 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(6 * PAGE, PAGE).copyFrom(MemorySegment.ofArray(SECRET));
            owner.pages().asSlice(7 * PAGE, PAGE).fill((byte) 0x77);
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), key, out);
            changes.drain();
            writer.writeAll();
            source.convert(6 * PAGE, PAGE, Attribute.SHARED, Content.ZERO);
            try (HostMapping host = source.map(0, PAGES * PAGE)) {
                host.write(6 * PAGE, page(0x66));
            }
            source.punchHole(7 * PAGE, PAGE);
            writer.writePages(changes.drain());
            writer.finish();
        }
        return file;
    }

    /** {@return a file of {@code pages} pages, every page written with its number, every third private} */
    static Path numbered(Path dir, SecretKey key, int pages) throws IOException {
        Path file = dir.resolve("numbered-" + pages + ".gmem");
        try (GuestMemory source = GuestMemory.create(pages * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD);
             var out = Files.newOutputStream(file)) {
            Binding owner = source.bind(new Owner() { }, 0, pages * PAGE);
            for (int p = 0; p < pages; p++) {
                owner.pages().asSlice(p * PAGE, PAGE).fill((byte) (p + 1));
            }
            for (int p = 0; p < pages; p += 3) {
                source.convert(p * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
            }
            Snapshot.write(owner, key, out);
        }
        return file;
    }

    static GuestMemory target(long pages) {
        return GuestMemory.create(pages * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD);
    }

    static byte[] bytes(MemorySegment segment) {
        return segment.toArray(ValueLayout.JAVA_BYTE);
    }

    /** Copies a page of the owner's view out with a system call: the kernel faults on it, as KVM would. */
    static byte[] nativeRead(MemorySegment page) {
        int sink = Memfd.create("gmem-test", Memfd.MFD_CLOEXEC);
        try (Arena arena = Arena.ofConfined()) {
            long n = Fd.pwrite(sink, page, 0);
            assertThat(n).isEqualTo(page.byteSize());
            MemorySegment back = arena.allocate(page.byteSize());
            Fd.pread(sink, back, 0);
            return bytes(back);
        } finally {
            Fd.close(sink);
        }
    }

    @Test
    void everyPageStateRoundTripsLazily() throws Exception {
        SecretKey key = key();
        Path file = everyState(dir, key);
        try (GuestMemory target = target(PAGES); PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            GatedPageSource gated = new GatedPageSource(source);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), gated, s -> { })) {
                assertThat(restore.eagerReason()).isEmpty();
                // The layout is there at once, before any byte arrived.
                assertThat(target.attribute(0)).isEqualTo(Attribute.SHARED);
                assertThat(target.attribute(3 * PAGE)).isEqualTo(Attribute.PRIVATE);
                assertThat(target.attribute(5 * PAGE)).isEqualTo(Attribute.PRIVATE);
                assertThat(target.attribute(6 * PAGE)).isEqualTo(Attribute.SHARED);
                // Holes fault in without reaching the source, which is still shut.
                assertThat(nativeRead(owner.pages().asSlice(2 * PAGE, PAGE))).containsOnly(0);
                assertThat(nativeRead(owner.pages().asSlice(5 * PAGE, PAGE))).containsOnly(0);
                // (they returned while the source was shut: no fault of theirs reached it)
                assertThat(restore.stats().zeroFaults()).isGreaterThanOrEqualTo(2);
                gated.open();
                try (HostMapping host = target.map(0, PAGES * PAGE)) {
                    assertThat(host.read(0, (int) PAGE)).containsOnly(0x11);
                    assertThat(host.read(PAGE, (int) PAGE)).containsOnly(0);
                    assertThat(host.read(6 * PAGE, (int) PAGE)).containsOnly(0x66);
                    assertThatThrownBy(() -> host.read(3 * PAGE, (int) PAGE)).isInstanceOfSatisfying(HostAccessFault.class,
                            e -> assertThat(e.errno()).isEqualTo(Errno.EFAULT));
                }
                assertThat(nativeRead(owner.pages().asSlice(3 * PAGE, PAGE))).isEqualTo(SECRET);
                assertThat(restore.await(WAIT)).isTrue();
                assertThat(restore.isComplete()).isTrue();
                assertThat(bytes(owner.pages().asSlice(4 * PAGE, PAGE))).containsOnly(0);
                // A hole nobody touched stays a hole (touched ones hold a zero page, as on any file).
                List<PageRun> runs = target.pageRuns();
                assertThat(runs).contains(new PageRun(7 * PAGE, PAGE, Attribute.SHARED, false));
                assertThat(runs).contains(new PageRun(3 * PAGE, 3 * PAGE, Attribute.PRIVATE, true));
                assertThat(bytes(owner.pages().asSlice(7 * PAGE, PAGE))).containsOnly(0);
                // pages 0, 1, 3, 4 and 6 had bytes: each fetched once
                assertThat(restore.stats().pagesFetched()).isEqualTo(5);
            }
            // After completion the file is an ordinary one again: a punched page reads zero.
            target.punchHole(0, PAGE);
            try (HostMapping host = target.map(0, PAGE)) {
                assertThat(host.read(0, (int) PAGE)).containsOnly(0);
            }
        }
    }

    @Test
    void aStreamRestoresLazilyOnceThroughItsGuard() throws Exception {
        SecretKey key = key();
        Path file = numbered(dir, key, 8);
        Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
        try (PageSource source = PageSource.open(file, key, guard)) {
            assertThat(source.fileSize()).isEqualTo(8 * PAGE);
            GuestMemoryException replay = (GuestMemoryException) org.assertj.core.api.Assertions.catchThrowable(
                    () -> PageSource.open(file, key, guard));
            assertThat(replay.errno()).isEqualTo(Errno.EALREADY);
        }
        GuestMemoryException wrongKey = (GuestMemoryException) org.assertj.core.api.Assertions.catchThrowable(() -> {
            try (PageSource s = PageSource.open(file, key(), new Snapshot.ReplayGuard());
                 GuestMemory target = target(8)) {
                LazyRestore.start(List.of(target.bind(new Owner() { }, 0, 8 * PAGE)), s, x -> { }).fetch(0, 8 * PAGE);
            }
        });
        assertThat(wrongKey.errno()).isEqualTo(Errno.EBADMSG);
    }

    @Test
    void aTargetThatHoldsMemoryOrIsOfAnotherSizeIsRefusedUnchanged() throws Exception {
        SecretKey key = key();
        Path file = numbered(dir, key, 4);
        try (GuestMemory full = target(4); GuestMemory small = target(2);
             PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            full.allocate(0, PAGE);
            Binding a = full.bind(new Owner() { }, 0, 4 * PAGE);
            assertThat(((GuestMemoryException) org.assertj.core.api.Assertions.catchThrowable(
                    () -> LazyRestore.start(List.of(a), source, s -> { }))).errno()).isEqualTo(Errno.EINVAL);
            assertThat(full.attribute(0)).isEqualTo(Attribute.SHARED);
            Binding b = small.bind(new Owner() { }, 0, 2 * PAGE);
            assertThat(((GuestMemoryException) org.assertj.core.api.Assertions.catchThrowable(
                    () -> LazyRestore.start(List.of(b), source, s -> { }))).errno()).isEqualTo(Errno.EINVAL);
            assertThat(((GuestMemoryException) org.assertj.core.api.Assertions.catchThrowable(
                    () -> LazyRestore.start(List.of(b), null, s -> { }))).errno()).isEqualTo(Errno.EINVAL);
        }
    }

    /**
     * Host readers, native faulters and the background pull race for the same pages: each
     * page is copied in exactly once (a second copy would find the page there and fail the
     * restore), and everyone sees its final bytes.
     */
    @Test
    void pagesTouchedByHostNativeCodeAndThePullAtOnceAreServedOnceWithTheirBytes() throws Exception {
        SecretKey key = key();
        int pages = 512;
        Path file = numbered(dir, key, pages);
        for (int round = 0; round < 3; round++) {
            try (GuestMemory target = target(pages);
                 PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
                Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
                ExecutorService pool = Executors.newFixedThreadPool(4);
                try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                     HostMapping host = target.map(0, pages * PAGE)) {
                    List<Future<?>> work = new ArrayList<>();
                    for (int t = 0; t < 4; t++) {
                        int seed = t + round * 10;
                        boolean nativeSide = t % 2 == 0;
                        work.add(pool.submit(() -> {
                            Random random = new Random(seed);
                            for (int i = 0; i < 200; i++) {
                                int p = random.nextInt(pages);
                                byte want = (byte) (p + 1);
                                if (nativeSide) {
                                    assertThat(nativeRead(owner.pages().asSlice(p * PAGE, PAGE))).containsOnly(want);
                                } else if (p % 3 != 0) {
                                    assertThat(host.read(p * PAGE, (int) PAGE)).containsOnly(want);
                                } else {
                                    assertThatThrownBy(() -> host.read(p * PAGE, (int) PAGE)).isInstanceOf(HostAccessFault.class);
                                }
                            }
                            return null;
                        }));
                    }
                    for (Future<?> f : work) {
                        f.get(60, TimeUnit.SECONDS);
                    }
                    assertThat(restore.await(WAIT)).isTrue();
                    assertThat(restore.stats().pagesFetched()).isEqualTo(pages);
                    for (int p = 0; p < pages; p++) {
                        assertThat(bytes(owner.pages().asSlice(p * PAGE, PAGE))).containsOnly((byte) (p + 1));
                    }
                } finally {
                    pool.shutdownNow();
                    pool.awaitTermination(10, TimeUnit.SECONDS);
                }
            }
        }
    }

    /** A private page is never reachable by host code: not while it is absent, fetching, or after. */
    @Test
    void aPrivatePageNeverReachesHostCode() throws Exception {
        SecretKey key = key();
        Path file = numbered(dir, key, 6);
        try (GuestMemory target = target(6); PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, 6 * PAGE);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                 HostMapping host = target.map(0, 6 * PAGE)) {
                CompletableFuture<byte[]> guest = CompletableFuture.supplyAsync(() -> nativeRead(owner.pages().asSlice(0, PAGE)));
                for (var attempt : List.<Runnable>of(() -> host.read(0, (int) PAGE), () -> host.lease(0, PAGE),
                        () -> target.pin(0, PAGE), () -> host.read(3 * PAGE, 2 * (int) PAGE))) {
                    // page 0 and 3 are private: refused, whether or not their bytes came yet
                    CompletableFuture<Throwable> refused = CompletableFuture.supplyAsync(() -> {
                        try {
                            attempt.run();
                            return null;
                        } catch (RuntimeException e) {
                            return e;
                        }
                    });
                    source.open();
                    assertThat(refused.get(60, TimeUnit.SECONDS)).isInstanceOfSatisfying(GuestMemoryException.class,
                            e -> assertThat(e.errno()).isEqualTo(Errno.EFAULT));
                }
                assertThat(guest.get(60, TimeUnit.SECONDS)).containsOnly(1);
                assertThat(restore.await(WAIT)).isTrue();
                assertThatThrownBy(() -> host.read(0, (int) PAGE)).isInstanceOf(HostAccessFault.class);
                assertThat(host.read(PAGE, (int) PAGE)).containsOnly(2);
            }
        }
    }

    /** The file is cut after its index was read: the thread that needs a lost page gets an error, nobody hangs. */
    @Test
    void aSourceCutShortFailsTheAccessingThreadsAndNativeCodeIsNotLeftWaiting() throws Exception {
        SecretKey key = key();
        int pages = 64;
        Path file = numbered(dir, key, pages);
        try (GuestMemory target = target(pages); PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                 HostMapping host = target.map(0, pages * PAGE)) {
                List<Throwable> heard = new java.util.concurrent.CopyOnWriteArrayList<>();
                java.util.concurrent.CountDownLatch told = new java.util.concurrent.CountDownLatch(1);
                restore.onFailure(t -> {
                    heard.add(t);
                    told.countDown();
                });
                try (FileChannel cut = FileChannel.open(file, StandardOpenOption.WRITE)) {
                    cut.truncate(Files.size(file) / 4);
                }
                CompletableFuture<Object> nativeSide = CompletableFuture.supplyAsync(() -> {
                    try {
                        return nativeRead(owner.pages().asSlice((pages - 1) * PAGE, PAGE));
                    } catch (LinuxException e) {
                        return e;
                    }
                });
                source.open();
                Throwable hostFailure = org.assertj.core.api.Assertions.catchThrowable(
                        () -> host.read((pages - 2) * PAGE, (int) PAGE));
                assertThat(hostFailure).isInstanceOfSatisfying(GuestMemoryException.class,
                        e -> assertThat(e.errno()).isIn(Errno.EBADMSG, Errno.EIO));
                // the native reader of a lost page fails (a poisoned page) instead of waiting
                Object nativeOutcome = nativeSide.get(60, TimeUnit.SECONDS);
                assertThat(nativeOutcome).isInstanceOfSatisfying(LinuxException.class,
                        e -> assertThat(e.errno()).isIn(dev.guestmemfd.linux.Errno.EFAULT.number(),
                                dev.guestmemfd.linux.Errno.EHWPOISON.number()));
                assertThatThrownBy(() -> restore.await(WAIT)).isInstanceOf(GuestMemoryException.class);
                assertThat(restore.failure()).isPresent();
                // listeners run after the failure is visible to waiters: wait for them (bounded)
                assertThat(told.await(60, TimeUnit.SECONDS)).isTrue();
                assertThat(heard).hasSize(1);
                // from now on the file refuses library access rather than show a half restore
                assertThatThrownBy(() -> host.read(PAGE, (int) PAGE)).isInstanceOf(GuestMemoryException.class);
            }
        }
    }

    /** The source dies (a closed stream, a broken channel): the same clear error. */
    @Test
    void aSourceThatDiesLeavesAClearErrorOnTheHostThread() throws Exception {
        SecretKey key = key();
        Path file = numbered(dir, key, 16);
        try (GuestMemory target = target(16); PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, 16 * PAGE);
            GatedPageSource source = new GatedPageSource(inner);
            source.die();
            source.open();
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                 HostMapping host = target.map(0, 16 * PAGE)) {
                assertThatThrownBy(() -> host.read(PAGE, (int) PAGE)).isInstanceOfSatisfying(GuestMemoryException.class,
                        e -> {
                            assertThat(e.errno()).isEqualTo(Errno.EIO);
                            assertThat(e.getMessage()).contains("the source died");
                        });
                assertThatThrownBy(() -> restore.await(WAIT)).isInstanceOf(GuestMemoryException.class);
            }
        }
    }

    /** A stream whose digest does not check out fails loudly once every page is in. */
    @Test
    void anAlteredClearRecordFailsTheRestoreAtItsEnd() throws Exception {
        SecretKey key = key();
        Path file = everyState(dir, key);
        byte[] all = Files.readAllBytes(file);
        // the first shared record's body starts after the header and one record header
        int at = SnapshotFormat.HEADER_BYTES + SnapshotFormat.RECORD_HEADER_BYTES;
        assertThat(all[SnapshotFormat.HEADER_BYTES]).isEqualTo((byte) SnapshotFormat.SHARED);
        all[at] ^= 1;
        Files.write(file, all);
        try (GuestMemory target = target(PAGES); PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                assertThatThrownBy(() -> restore.await(WAIT)).isInstanceOfSatisfying(GuestMemoryException.class,
                        e -> assertThat(e.errno()).isEqualTo(Errno.EBADMSG));
                assertThat(restore.isComplete()).isFalse();
                try (HostMapping host = target.map(0, PAGE)) {
                    assertThatThrownBy(() -> host.read(0, (int) PAGE)).isInstanceOfSatisfying(GuestMemoryException.class,
                            e -> assertThat(e.errno()).isEqualTo(Errno.EBADMSG));
                }
            }
        }
    }

    /**
     * The safepoint hazard, shown harmless: threads wait in faults inside native code (a system
     * call copying from pages not yet served, as a vCPU inside {@code KVM_RUN} does) while the
     * main thread forces garbage collections, each a safepoint; then the pages are served.
     */
    @Test
    void garbageCollectionsWhileFaultsArePendingComplete() throws Exception {
        SecretKey key = key();
        int pages = 32;
        Path file = numbered(dir, key, pages);
        try (GuestMemory target = target(pages); PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { });
                 HostMapping host = target.map(0, pages * PAGE)) {
                List<CompletableFuture<byte[]>> faulting = new ArrayList<>();
                for (int p = 0; p < 4; p++) {
                    int page = p * 7 + 1;
                    faulting.add(CompletableFuture.supplyAsync(() -> nativeRead(owner.pages().asSlice(page * PAGE, PAGE))));
                }
                CompletableFuture<byte[]> hostReader = CompletableFuture.supplyAsync(() -> host.read(5 * PAGE, (int) PAGE));
                while (source.reads() == 0) {
                    Thread.sleep(1);  // a fault (or the pull) is waiting on the source
                }
                for (int i = 0; i < 20; i++) {
                    System.gc();  // a safepoint each: none may wait for the faulting threads
                }
                assertThat(faulting).allMatch(f -> !f.isDone());
                source.open();
                for (int p = 0; p < 4; p++) {
                    assertThat(faulting.get(p).get(60, TimeUnit.SECONDS)).containsOnly((byte) (p * 7 + 2));
                }
                assertThat(hostReader.get(60, TimeUnit.SECONDS)).containsOnly(6);
                for (int i = 0; i < 5; i++) {
                    System.gc();
                }
                assertThat(restore.await(WAIT)).isTrue();
                assertThat(restore.stats().faults()).isPositive();
            }
        }
    }

    static Stream<Backing> otherBackings() {
        // Hugetlb files are made of whole huge pages, and this snapshot is of a smaller file.
        return Backing.available().stream().filter(b -> b != Backing.MEMFD && !b.isHugetlb());
    }

    /** memfd_secret and guest_memfd mappings cannot register with userfaultfd: the restore is eager, and says why. */
    @ParameterizedTest
    @MethodSource("otherBackings")
    void backingsUserfaultfdDoesNotServeRestoreEagerly(Backing backing) throws Exception {
        SecretKey key = key();
        Path file = everyState(dir, key);
        try (GuestMemory target = GuestMemory.create(PAGES * PAGE, flags(backing, true), backing);
             PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, PAGES * PAGE);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { })) {
                assertThat(restore.eagerReason()).isPresent();
                System.out.println(backing + ": " + restore.eagerReason().get());
                assertThat(restore.isComplete()).isTrue();
                assertThat(restore.await(Duration.ZERO)).isTrue();
                assertThat(bytes(owner.pages().asSlice(0, PAGE))).containsOnly(0x11);
                assertThat(bytes(owner.pages().asSlice(3 * PAGE, PAGE))).isEqualTo(SECRET);
                assertThat(bytes(owner.pages().asSlice(6 * PAGE, PAGE))).containsOnly(0x66);
                assertThat(target.attribute(3 * PAGE)).isEqualTo(Attribute.PRIVATE);
            }
        }
    }
}
