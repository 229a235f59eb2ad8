package dev.guestmemfd;

import static dev.guestmemfd.LazyRestoreTest.WAIT;
import static dev.guestmemfd.LazyRestoreTest.bytes;
import static dev.guestmemfd.LazyRestoreTest.nativeRead;
import static dev.guestmemfd.LazyRestoreTest.numbered;
import static dev.guestmemfd.SnapshotFixtures.PAGE;
import static dev.guestmemfd.SnapshotFixtures.flags;
import static dev.guestmemfd.SnapshotFixtures.key;
import static dev.guestmemfd.SnapshotFixtures.page;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;

import dev.guestmemfd.linux.LinuxException;
import dev.guestmemfd.linux.Userfaultfd;
import dev.guestmemfd.testing.GatedPageSource;
import dev.guestmemfd.testing.RequiresBacking;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
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
 * Lazy restore by whole huge pages: on {@code HUGETLB_2M} where this host's pool has pages
 * (skipped with the reason where it has none), and the same path on a memfd restored with a
 * 2 MiB fetch unit, which runs on every host. Faults come from system calls (native code, as
 * a vCPU raises them), host access through the library; no Java code touches the owner's view
 * before the restore completed.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LazyRestoreHugePageTest {
    static final long HUGE = 2L << 20;
    static final int PER_HUGE = (int) (HUGE / PAGE);
    static final byte[] SECRET = LazyRestoreTest.SECRET;

    @TempDir
    Path dir;

    /** The backings under test: hugetlb, and memfd restored by 2 MiB units. */
    static Stream<Backing> backings() {
        return Stream.of(Backing.HUGETLB_2M, Backing.MEMFD);
    }

    static GuestMemory target(Backing backing, long size) {
        return GuestMemory.create(size, flags(backing, true), backing);
    }

    /** Starts the restore by whole huge pages: hugetlb's own unit, or a 2 MiB one forced on a memfd. */
    static LazyRestore start(Backing backing, Binding owner, PageSource source) throws IOException {
        return LazyRestore.start(List.of(owner), source, s -> { }, backing.isHugetlb() ? 0 : HUGE);
    }

    /** A snapshot, the bytes every page must end with, and which pages are private. */
    record Image(Path file, byte[] bytes, BitSet privatePages) {
        byte[] page(int p) {
            return Arrays.copyOfRange(bytes, (int) (p * PAGE), (int) ((p + 1) * PAGE));
        }
    }

    static byte numberOf(int p) {
        return (byte) (p * 7 + 1);
    }

    /**
     * Three huge pages (a memfd source, so holes lie inside huge pages). Huge page 0 mixes
     * every state: 0 shared data, 1 shared zero but allocated, 2 shared hole, 3 private data,
     * 4 private zero but allocated, 5 private hole, 6 sent sealed then in the clear, 7 sent
     * with data then punched, 16-47 numbered (two records); 500-531 numbered, whose first
     * record reaches across the edge into huge page 1; 540-560 private numbered; 600 shared.
     * Huge page 2 is all holes.
     */
    static Image mixed(Path dir, SecretKey key) throws IOException {
        int pages = 3 * PER_HUGE;
        Path file = dir.resolve("mixed.gmem");
        byte[] want = new byte[(int) (pages * PAGE)];
        BitSet privatePages = new BitSet();
        try (GuestMemory source = GuestMemory.create(pages * PAGE, flags(Backing.MEMFD, true), Backing.MEMFD);
             ChangeLog changes = source.trackChanges();
             var out = Files.newOutputStream(file)) {
            Binding owner = source.bind(new Owner() { }, 0, pages * PAGE);
            write(owner, want, 0, page(0x11));
            source.allocate(PAGE, PAGE);
            source.convert(3 * PAGE, 3 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            privatePages.set(3, 6);
            write(owner, want, 3, SECRET);
            source.allocate(4 * PAGE, PAGE);
            source.convert(6 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(6 * PAGE, PAGE).copyFrom(MemorySegment.ofArray(SECRET));
            owner.pages().asSlice(7 * PAGE, PAGE).fill((byte) 0x77);
            for (int p : concat(range(16, 48), range(500, 532), range(540, 561))) {
                write(owner, want, p, page(numberOf(p)));
            }
            source.convert(540 * PAGE, 21 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            privatePages.set(540, 561);
            write(owner, want, 600, page(0x60));
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), key, out);
            changes.drain();
            writer.writeAll();
            source.convert(6 * PAGE, PAGE, Attribute.SHARED, Content.ZERO);
            try (HostMapping host = source.map(0, 8 * PAGE)) {
                host.write(6 * PAGE, page(0x66));
            }
            System.arraycopy(page(0x66), 0, want, (int) (6 * PAGE), (int) PAGE);
            source.punchHole(7 * PAGE, PAGE);
            writer.writePages(changes.drain());
            writer.finish();
        }
        return new Image(file, want, privatePages);
    }

    private static void write(Binding owner, byte[] want, int p, byte[] bytes) {
        owner.pages().asSlice(p * PAGE, PAGE).copyFrom(MemorySegment.ofArray(bytes));
        System.arraycopy(bytes, 0, want, (int) (p * PAGE), (int) PAGE);
    }

    private static int[] range(int from, int to) {
        return java.util.stream.IntStream.range(from, to).toArray();
    }

    private static int[] concat(int[]... parts) {
        return Arrays.stream(parts).flatMapToInt(Arrays::stream).toArray();
    }

    private static long pagesWithBytes(PageSource source) {
        return source.layout().stream().filter(PageRun::allocated).mapToLong(r -> r.length() / PAGE).sum();
    }

    private static void assertErrno(Throwable thrown, Errno... errnos) {
        assertThat(thrown).isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isIn((Object[]) errnos));
    }

    @ParameterizedTest
    @MethodSource("backings")
    @RequiresBacking
    void everyPageStateRoundTripsLazilyInAHugePageThatMixesThem(Backing backing) throws Exception {
        SecretKey key = key();
        Image image = mixed(dir, key);
        long size = 3 * HUGE;
        try (GuestMemory target = target(backing, size); PageSource inner = PageSource.open(image.file(), key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, size);
            long withBytes = pagesWithBytes(inner);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = start(backing, owner, source)) {
                assertThat(restore.eagerReason()).isEmpty();
                // The layout is there at once, at 4 KiB, inside huge pages, before any byte arrived.
                assertThat(target.attribute(0)).isEqualTo(Attribute.SHARED);
                assertThat(target.attribute(3 * PAGE)).isEqualTo(Attribute.PRIVATE);
                assertThat(target.attribute(5 * PAGE)).isEqualTo(Attribute.PRIVATE);
                assertThat(target.attribute(6 * PAGE)).isEqualTo(Attribute.SHARED);
                assertThat(target.attribute(560 * PAGE)).isEqualTo(Attribute.PRIVATE);
                // A huge page of holes is answered with zeros while the source is still shut.
                assertThat(nativeRead(owner.pages().asSlice(2 * HUGE + 100 * PAGE, PAGE))).containsOnly(0);
                assertThat(restore.stats().zeroFaults()).isPositive();
                source.open();
                try (HostMapping host = target.map(0, size)) {
                    // one read across the edge of huge pages 0 and 1 brings both
                    assertThat(host.read(500 * PAGE, (int) (32 * PAGE))).isEqualTo(
                            Arrays.copyOfRange(image.bytes(), (int) (500 * PAGE), (int) (532 * PAGE)));
                    for (int p = 0; p < 3 * PER_HUGE; p++) {
                        if (image.privatePages().get(p)) {
                            if (p % 5 == 0) {  // refused, whether or not its huge page came yet
                                int at = p;
                                assertThatThrownBy(() -> host.read(at * PAGE, (int) PAGE)).isInstanceOfSatisfying(
                                        HostAccessFault.class, e -> assertThat(e.errno()).isEqualTo(Errno.EFAULT));
                            }
                        } else {
                            assertThat(host.read(p * PAGE, (int) PAGE)).as("page %d", p).isEqualTo(image.page(p));
                        }
                    }
                }
                assertThat(nativeRead(owner.pages().asSlice(3 * PAGE, PAGE))).isEqualTo(SECRET);
                assertThat(nativeRead(owner.pages().asSlice(545 * PAGE, PAGE))).isEqualTo(image.page(545));
                assertThat(restore.await(WAIT)).isTrue();
                assertThat(restore.isComplete()).isTrue();
                // Every page with bytes was copied in once, inside its huge page's one copy.
                assertThat(restore.stats().pagesFetched()).isEqualTo(withBytes);
                // Complete: the owner's view may be read from Java now. Private pages hold their
                // bytes there, and only there.
                assertThat(bytes(owner.pages())).isEqualTo(image.bytes());
                try (HostMapping host = target.map(0, 8 * PAGE)) {
                    assertThatThrownBy(() -> host.read(3 * PAGE, (int) PAGE)).isInstanceOf(HostAccessFault.class);
                    assertThat(host.read(2 * PAGE, (int) PAGE)).containsOnly(0);
                }
                assertThat(target.attribute(2 * PAGE)).isEqualTo(Attribute.SHARED);
                assertThat(target.attribute(5 * PAGE)).isEqualTo(Attribute.PRIVATE);
            }
        }
    }

    /**
     * Host readers, native faulters and the pull race for the same huge pages: each huge page
     * is copied in once (a second copy would find it there and fail the restore), and every
     * reader sees its page's final bytes.
     */
    @ParameterizedTest
    @MethodSource("backings")
    @RequiresBacking
    void hugePagesRacedByHostNativeCodeAndThePullAreServedOnceWithTheirBytes(Backing backing) throws Exception {
        SecretKey key = key();
        int pages = 4 * PER_HUGE;
        Path file = numbered(dir, key, pages);
        // Eight rounds: a host reader that lost its claim to another thread once went on
        // without waiting (seen once under .ci/run, in round two); more rounds, more chances.
        for (int round = 0; round < 8; round++) {
            try (GuestMemory target = target(backing, pages * PAGE);
                 PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
                Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
                ExecutorService pool = Executors.newFixedThreadPool(4);
                try (LazyRestore restore = start(backing, owner, source);
                     HostMapping host = target.map(0, pages * PAGE)) {
                    List<Future<?>> work = new ArrayList<>();
                    for (int t = 0; t < 4; t++) {
                        int seed = t + round * 10;
                        boolean nativeSide = t % 2 == 0;
                        work.add(pool.submit(() -> {
                            Random random = new Random(seed);
                            for (int i = 0; i < 150; i++) {
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
                    LazyRestore.Stats stats = restore.stats();
                    assertThat(stats.pagesFetched()).isEqualTo(pages);
                    // four huge pages, each brought by exactly one of: a fault, a host access, the pull
                    assertThat(stats.faults() + stats.hostFetches() + stats.pulled()).isEqualTo(4);
                    for (int p = 0; p < pages; p++) {
                        assertThat(owner.pages().get(java.lang.foreign.ValueLayout.JAVA_BYTE, p * PAGE + 123)).isEqualTo((byte) (p + 1));
                    }
                } finally {
                    pool.shutdownNow();
                }
            }
        }
    }

    /**
     * A fault from native code and a host access through the library wait on the same huge
     * page (the source shut), with the pull running: the huge page is copied in once, and
     * both get their own page of it.
     */
    @ParameterizedTest
    @MethodSource("backings")
    @RequiresBacking
    void aNativeFaultAndAHostAccessOnOneHugePageWaitForOneCopy(Backing backing) throws Exception {
        SecretKey key = key();
        int pages = 2 * PER_HUGE;
        Path file = numbered(dir, key, pages);
        try (GuestMemory target = target(backing, pages * PAGE);
             PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = start(backing, owner, source);
                 HostMapping host = target.map(0, pages * PAGE)) {
                int nativePage = PER_HUGE + 100;  // private: the owner's view reaches it all the same
                int hostPage = PER_HUGE + 401;
                CompletableFuture<byte[]> guest = CompletableFuture.supplyAsync(
                        () -> nativeRead(owner.pages().asSlice(nativePage * PAGE, PAGE)));
                CompletableFuture<byte[]> hostRead = CompletableFuture.supplyAsync(() -> host.read(hostPage * PAGE, (int) PAGE));
                while (source.reads() < 2) {
                    Thread.sleep(1);  // the fault's (or the host's) fetch and the pull wait on the source
                }
                assertThat(guest).isNotDone();
                assertThat(hostRead).isNotDone();
                source.open();
                assertThat(guest.get(60, TimeUnit.SECONDS)).containsOnly((byte) (nativePage + 1));
                assertThat(hostRead.get(60, TimeUnit.SECONDS)).containsOnly((byte) (hostPage + 1));
                assertThat(restore.await(WAIT)).isTrue();
                assertThat(restore.stats().pagesFetched()).isEqualTo(pages);
                assertThat(restore.stats().faults() + restore.stats().hostFetches() + restore.stats().pulled()).isEqualTo(2);
            }
        }
    }

    /**
     * A punch and a conversion of single 4 KiB pages inside huge pages not fetched yet bring
     * their huge page in first, then act on those pages only: the punched page reads zero, its
     * neighbours keep their bytes, the converted page keeps its bytes and leaves the host's
     * reach, and the restore still completes with every page fetched once.
     */
    @ParameterizedTest
    @MethodSource("backings")
    @RequiresBacking
    void aPunchAndAConversionInsideHugePagesNotYetFetchedBringThemFirst(Backing backing) throws Exception {
        SecretKey key = key();
        int pages = 3 * PER_HUGE;
        Path file = numbered(dir, key, pages);
        try (GuestMemory target = target(backing, pages * PAGE);
             PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = start(backing, owner, source);
                 HostMapping host = target.map(0, pages * PAGE)) {
                int punched = 2 * PER_HUGE + 10;  // the last huge page: the pull reaches it last
                int converted = PER_HUGE + 11;    // page 523: shared in the snapshot
                CompletableFuture<Void> punch = CompletableFuture.runAsync(() -> target.punchHole(punched * PAGE, PAGE));
                CompletableFuture<Void> convert = CompletableFuture.runAsync(
                        () -> target.convert(converted * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE));
                source.open();
                punch.get(60, TimeUnit.SECONDS);
                convert.get(60, TimeUnit.SECONDS);
                assertThat(host.read(punched * PAGE, (int) PAGE)).containsOnly(0);
                assertThat(host.read((punched + 2) * PAGE, (int) PAGE)).containsOnly((byte) (punched + 3));  // +1 is private
                assertThat(host.read((punched - 1) * PAGE, (int) PAGE)).containsOnly((byte) punched);
                assertThat(nativeRead(owner.pages().asSlice(punched * PAGE, PAGE))).containsOnly(0);
                assertThatThrownBy(() -> host.read(converted * PAGE, (int) PAGE)).isInstanceOfSatisfying(HostAccessFault.class,
                        e -> assertThat(e.errno()).isEqualTo(Errno.EFAULT));
                assertThat(nativeRead(owner.pages().asSlice(converted * PAGE, PAGE))).containsOnly((byte) (converted + 1));
                assertThat(restore.await(WAIT)).isTrue();
                assertThat(restore.stats().pagesFetched()).isEqualTo(pages);
                assertThat(bytes(owner.pages().asSlice(punched * PAGE, PAGE))).containsOnly(0);
            }
        }
    }

    /** The file is cut after its index was read: the threads that need a lost huge page get an error, none hangs. */
    @ParameterizedTest
    @MethodSource("backings")
    @RequiresBacking
    void aSourceCutShortFailsTheAccessAndLeavesNoNativeCodeWaiting(Backing backing) throws Exception {
        SecretKey key = key();
        int pages = 3 * PER_HUGE;
        Path file = numbered(dir, key, pages);
        try (GuestMemory target = target(backing, pages * PAGE);
             PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = start(backing, owner, source);
                 HostMapping host = target.map(0, pages * PAGE)) {
                List<Throwable> heard = new CopyOnWriteArrayList<>();
                restore.onFailure(heard::add);
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
                assertErrno(catchThrowable(() -> host.read((2 * PER_HUGE - 2) * PAGE, (int) PAGE)), Errno.EBADMSG, Errno.EIO);
                // the native reader of a lost huge page fails (poisoned) instead of waiting
                assertThat(nativeSide.get(60, TimeUnit.SECONDS)).isInstanceOfSatisfying(LinuxException.class,
                        e -> assertThat(e.errno()).isIn(dev.guestmemfd.linux.Errno.EFAULT.number(),
                                dev.guestmemfd.linux.Errno.EHWPOISON.number()));
                assertThatThrownBy(() -> restore.await(WAIT)).isInstanceOf(GuestMemoryException.class);
                assertThat(restore.failure()).isPresent();
                assertThat(heard).hasSize(1);
                assertThatThrownBy(() -> host.read(PAGE, (int) PAGE)).isInstanceOf(GuestMemoryException.class);
            }
        }
    }

    /**
     * The safepoint hazard on huge pages: threads wait in faults inside system calls while the
     * main thread forces garbage collections (each a safepoint: none may wait for them), then
     * the source opens and each gets its bytes.
     */
    @ParameterizedTest
    @MethodSource("backings")
    @RequiresBacking
    void garbageCollectionsWhileHugePageFaultsArePendingComplete(Backing backing) throws Exception {
        SecretKey key = key();
        int pages = 2 * PER_HUGE;
        Path file = numbered(dir, key, pages);
        try (GuestMemory target = target(backing, pages * PAGE);
             PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, pages * PAGE);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = start(backing, owner, source);
                 HostMapping host = target.map(0, pages * PAGE)) {
                int[] faulted = {1, 300, PER_HUGE + 3, PER_HUGE + 511};
                List<CompletableFuture<byte[]>> faulting = new ArrayList<>();
                for (int p : faulted) {
                    faulting.add(CompletableFuture.supplyAsync(() -> nativeRead(owner.pages().asSlice(p * PAGE, PAGE))));
                }
                CompletableFuture<byte[]> hostReader = CompletableFuture.supplyAsync(() -> host.read((PER_HUGE + 5) * PAGE, (int) PAGE));
                while (source.reads() == 0) {
                    Thread.sleep(1);
                }
                for (int i = 0; i < 20; i++) {
                    System.gc();
                }
                assertThat(faulting).allMatch(f -> !f.isDone());
                source.open();
                for (int i = 0; i < faulted.length; i++) {
                    assertThat(faulting.get(i).get(60, TimeUnit.SECONDS)).containsOnly((byte) (faulted[i] + 1));
                }
                assertThat(hostReader.get(60, TimeUnit.SECONDS)).containsOnly((byte) (PER_HUGE + 6));
                for (int i = 0; i < 5; i++) {
                    System.gc();
                }
                assertThat(restore.await(WAIT)).isTrue();
                LazyRestore.Stats stats = restore.stats();
                assertThat(stats.faults() + stats.hostFetches() + stats.pulled()).isEqualTo(2);  // each huge page once
            }
        }
    }

    static Stream<Backing> unregistrable() {
        return Stream.of(Backing.SECRET, Backing.KERNEL);
    }

    /**
     * Where userfaultfd refuses the mapping the restore is eager; with a huge fetch unit it
     * assembles each huge page whole and copies it in (the path a hugetlb file takes where
     * userfaultfd is not offered): every byte lands, private pages stay private.
     */
    @ParameterizedTest
    @MethodSource("unregistrable")
    @RequiresBacking
    void anEagerRestoreByHugePagesAssemblesEachWhole(Backing backing) throws Exception {
        SecretKey key = key();
        Image image = mixed(dir, key);
        long size = 3 * HUGE;
        try (GuestMemory target = target(backing, size); PageSource source = PageSource.open(image.file(), key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, size);
            long withBytes = pagesWithBytes(source);
            try (LazyRestore restore = LazyRestore.start(List.of(owner), source, s -> { }, HUGE)) {
                assertThat(restore.eagerReason()).isPresent();
                assertThat(restore.isComplete()).isTrue();
                assertThat(restore.stats().pagesFetched()).isEqualTo(withBytes);
                assertThat(bytes(owner.pages())).isEqualTo(image.bytes());
                assertThat(target.attribute(3 * PAGE)).isEqualTo(Attribute.PRIVATE);
                assertThat(target.attribute(545 * PAGE)).isEqualTo(Attribute.PRIVATE);
                assertThat(target.attribute(600 * PAGE)).isEqualTo(Attribute.SHARED);
            }
        }
    }

    /** A fetch unit that is no power of two, below the file's block, or does not divide the file is refused, nothing changed. */
    @Test
    void aFetchUnitThatDoesNotDivideTheFileIsRefused() throws Exception {
        SecretKey key = key();
        Path file = numbered(dir, key, PER_HUGE);
        try (GuestMemory target = target(Backing.MEMFD, HUGE);
             PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Binding owner = target.bind(new Owner() { }, 0, HUGE);
            for (long unit : new long[] {3 * PAGE, PAGE / 2, 2 * HUGE, -HUGE, Long.MIN_VALUE}) {
                assertErrno(catchThrowable(() -> LazyRestore.start(List.of(owner), source, s -> { }, unit)), Errno.EINVAL);
            }
            assertThat(target.attribute(0)).isEqualTo(Attribute.SHARED);
            assertThat(target.pageCounts().allocated()).isZero();
        }
    }

    private static String freeHugePages() {
        try {
            return Files.readString(Path.of("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")).strip();
        } catch (IOException e) {
            return "?";
        }
    }

    /**
     * What the kernel's userfaultfd does with a hugetlb range, measured on any host with
     * hugetlbfs, pool or not: a mapping made with {@code MAP_NORESERVE} needs no huge page until
     * one is filled. It registers in MISSING mode; {@code UFFDIO_ZEROPAGE} and a 4 KiB
     * {@code UFFDIO_COPY} are refused ({@code EINVAL}); a whole huge page can be poisoned
     * (no page needed for that), after which a system call reading it fails ({@code EFAULT})
     * instead of waiting for a server that does not exist.
     */
    @Test
    void aHugetlbRangeRegistersRefusesZeroPageAndSmallCopiesAndTakesAWholePoison() throws Exception {
        int fd;
        try {
            fd = dev.guestmemfd.linux.Memfd.create("gmem-test-huge", dev.guestmemfd.linux.Memfd.MFD_CLOEXEC
                    | dev.guestmemfd.linux.Memfd.MFD_HUGETLB | dev.guestmemfd.linux.Memfd.MFD_HUGE_2MB);
        } catch (LinuxException e) {
            org.junit.jupiter.api.Assumptions.abort("no hugetlbfs here: " + e.getMessage());
            return;
        }
        try (Arena arena = Arena.ofConfined(); Userfaultfd uffd = Userfaultfd.open(Userfaultfd.FEATURE_POISON)) {
            dev.guestmemfd.linux.Fd.ftruncate(fd, 2 * HUGE);
            MemorySegment mapping = dev.guestmemfd.linux.Mman.mmap(arena, 2 * HUGE,
                    dev.guestmemfd.linux.Mman.PROT_READ | dev.guestmemfd.linux.Mman.PROT_WRITE,
                    dev.guestmemfd.linux.Mman.MAP_SHARED | dev.guestmemfd.linux.Mman.MAP_NORESERVE, fd, 0);
            long base = mapping.address();
            assertThat(base % HUGE).isZero();
            long ioctls = uffd.register(base, 2 * HUGE);
            MemorySegment copyArgs = arena.allocate(Userfaultfd.COPY);
            MemorySegment fillArgs = arena.allocate(Userfaultfd.ZEROPAGE);
            MemorySegment bytes = arena.allocate(HUGE, PAGE);
            bytes.fill((byte) 0x5A);
            int einval = -dev.guestmemfd.linux.Errno.EINVAL.number();
            long zero = uffd.zeroPage(fillArgs, base, HUGE);
            long small = uffd.copy(copyArgs, base, bytes.address(), PAGE);
            // A whole copy needs a huge page: from the pool (this mapping reserved none; the
            // library's own mappings reserve every page of the file). With none free, this kernel
            // answers EEXIST, as for a page already there (the page table it made for the copy
            // exists), not ENOMEM: measured, and why a copy's EEXIST on hugetlb proves nothing.
            long whole = uffd.copy(copyArgs, base, bytes.address(), HUGE);
            long poisoned = uffd.poison(fillArgs, base + HUGE, HUGE);
            System.out.printf("hugetlb userfaultfd: range ioctls 0x%x, ZEROPAGE %d, COPY 4 KiB %d, COPY 2 MiB %d"
                    + " (%s free huge pages), POISON 2 MiB %d%n", ioctls, zero, small, whole, freeHugePages(), poisoned);
            assertThat(whole).isIn(HUGE, (long) -dev.guestmemfd.linux.Errno.EEXIST.number(),
                    (long) -dev.guestmemfd.linux.Errno.ENOMEM.number());
            assertThat(ioctls & (1L << 4)).as("UFFDIO_ZEROPAGE offered on hugetlb").isZero();
            assertThat(ioctls & (1L << 3)).as("UFFDIO_COPY offered on hugetlb").isNotZero();
            assertThat(zero).isEqualTo(einval);
            assertThat(small).isEqualTo(einval);
            assertThat(poisoned).isEqualTo(HUGE);
            // A native read of the poisoned huge page fails at once (no server runs here).
            int sink = dev.guestmemfd.linux.Memfd.create("gmem-test-sink", dev.guestmemfd.linux.Memfd.MFD_CLOEXEC);
            try {
                Throwable read = catchThrowable(() -> dev.guestmemfd.linux.Fd.pwrite(sink, mapping.asSlice(HUGE + PAGE, PAGE), 0));
                assertThat(read).isInstanceOfSatisfying(LinuxException.class, e -> assertThat(e.errno())
                        .isIn(dev.guestmemfd.linux.Errno.EFAULT.number(), dev.guestmemfd.linux.Errno.EHWPOISON.number()));
            } finally {
                dev.guestmemfd.linux.Fd.close(sink);
            }
            uffd.unregister(base, 2 * HUGE);
        } finally {
            dev.guestmemfd.linux.Fd.close(fd);
        }
    }

    /**
     * The library's own hugetlb file (its reservation holds every page): its owner's view
     * registers, refuses {@code UFFDIO_ZEROPAGE} and a 4 KiB copy, takes a copy and a poison of
     * one whole huge page, and the copied bytes read back through the host mapping.
     */
    @Test
    @RequiresBacking(Backing.HUGETLB_2M)
    void hugetlbFaultsAreServedOnlyByWholeHugePages() {
        try (GuestMemory memory = target(Backing.HUGETLB_2M, 2 * HUGE);
             Userfaultfd uffd = Userfaultfd.open(Userfaultfd.FEATURE_POISON);
             Arena arena = Arena.ofConfined()) {
            Binding owner = memory.bind(new Owner() { }, 0, 2 * HUGE);
            long base = owner.pages().address();
            uffd.register(base, 2 * HUGE);
            MemorySegment copyArgs = arena.allocate(Userfaultfd.COPY);
            MemorySegment fillArgs = arena.allocate(Userfaultfd.ZEROPAGE);
            MemorySegment bytes = arena.allocate(HUGE, PAGE);
            bytes.fill((byte) 0x5A);
            int einval = -dev.guestmemfd.linux.Errno.EINVAL.number();
            long zero = uffd.zeroPage(fillArgs, base, HUGE);
            long small = uffd.copy(copyArgs, base, bytes.address(), PAGE);
            long whole = uffd.copy(copyArgs, base, bytes.address(), HUGE);
            long poisoned = uffd.poison(fillArgs, base + HUGE, HUGE);
            System.out.printf("hugetlb userfaultfd: ZEROPAGE %d, COPY 4 KiB %d, COPY 2 MiB %d, POISON 2 MiB %d%n",
                    zero, small, whole, poisoned);
            assertThat(zero).isEqualTo(einval);
            assertThat(small).isEqualTo(einval);
            assertThat(whole).isEqualTo(HUGE);
            assertThat(poisoned).isEqualTo(HUGE);
            uffd.unregister(base, 2 * HUGE);
            try (HostMapping host = memory.map(0, 2 * PAGE)) {
                assertThat(host.read(PAGE, 16)).containsOnly(0x5A);
            }
        }
    }
}
