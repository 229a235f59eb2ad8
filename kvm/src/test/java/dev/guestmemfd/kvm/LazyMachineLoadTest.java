package dev.guestmemfd.kvm;

import dev.guestmemfd.testing.ForwardingPageSource;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostAccessFault;
import dev.guestmemfd.PageRun;
import dev.guestmemfd.PageSource;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.testing.RequiresKvm;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A saved counting guest loaded lazily ({@link Migration#load(Kvm, PageSource, Backing)}): it
 * runs before its pages arrive, counts on from its saved count, and ends with memory equal to
 * the eager restore's; a source that fails under it stops its vCPUs for good.
 */
@RequiresKvm
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LazyMachineLoadTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long MEMORY = 16L << 20;
    /** The host's data lives above the guest's own pages (code, tables, stack, its region). */
    static final long DATA = 8L << 20;
    /** From here to {@link #PRIVATE_END} the data pages are private. */
    static final long PRIVATE_START = 12L << 20;
    static final long PRIVATE_END = 14L << 20;
    /** Text in one shared page, found in the file to alter it. */
    static final byte[] MARK = "lazy-machine-load shared mark 0123456789".getBytes(StandardCharsets.US_ASCII);
    static final long MARK_PAGE = DATA + 5 * PAGE;

    @TempDir
    Path dir;

    static SecretKey key() throws Exception {
        KeyGenerator g = KeyGenerator.getInstance("AES");
        g.init(256);
        return g.generateKey();
    }

    /** {@return the byte the host wrote at every position of data page {@code offset}} */
    static byte fill(long offset) {
        return (byte) (offset / PAGE * 7 + 1);
    }

    /**
     * Saves a counting guest that ran a while: above {@link #DATA} every fourth page a hole,
     * the others the host's bytes, those in [{@link #PRIVATE_START}, {@link #PRIVATE_END})
     * private, one page punched after being written.
     */
    Path save(Kvm kvm, SecretKey key) throws Exception {
        Path file = dir.resolve("guest.gsnap");
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 1).withMemorySize(MEMORY);
        try (Machine machine = Machine.boot(kvm, config)) {
            for (long at = DATA; at < MEMORY; at += PAGE) {
                if ((at / PAGE) % 4 != 0) {
                    byte[] bytes = new byte[(int) PAGE];
                    java.util.Arrays.fill(bytes, fill(at));
                    machine.hostMapping().write(at, bytes);
                }
            }
            machine.hostMapping().write(MARK_PAGE, MARK);
            machine.memory().convert(PRIVATE_START, PRIVATE_END - PRIVATE_START, Attribute.PRIVATE, Content.PRESERVE);
            machine.memory().punchHole(DATA + 9 * PAGE, PAGE);
            assertThat(MigrationTest.ticks(machine.run(Duration.ofMillis(300)).serial())).isNotEmpty();
            try (OutputStream out = new BufferedOutputStream(Files.newOutputStream(file))) {
                Migration.save(machine, key, out);
            }
        }
        return file;
    }

    static Machine loadEagerly(Kvm kvm, SecretKey key, Path file) throws IOException {
        try (InputStream in = new BufferedInputStream(Files.newInputStream(file))) {
            return Migration.load(kvm, key, in, new Snapshot.ReplayGuard());
        }
    }

    /** {@return the owner's view of the page at {@code offset}: the memslot binding over it} */
    static MemorySegment ownerPage(Machine machine, long offset) {
        for (Memslot slot : machine.memslots()) {
            long start = slot.binding().offset();
            if (offset >= start && offset - start < slot.binding().length()) {
                return slot.binding().pages().asSlice(offset - start, PAGE);
            }
        }
        throw new AssertionError("no memslot covers " + offset);
    }

    /** {@return the pages of the snapshot that hold bytes: each is fetched once} */
    static long pagesWithBytes(Path file, SecretKey key) throws IOException {
        try (PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            return source.layout().stream().filter(PageRun::allocated).mapToLong(r -> r.length() / PAGE).sum();
        }
    }

    /** {@return the count the guest keeps at [RBX], as saved} */
    static long savedCount(Machine eager) {
        long rbx = eager.vcpus().getFirst().registers().rbx();
        return ownerPage(eager, rbx).get(ValueLayout.JAVA_LONG, 0);
    }

    /**
     * Every page's attribute, allocation and bytes (private ones through the owner's view) are
     * the eager restore's, but for the count page the guest wrote since; the host's mapping
     * still refuses the private pages.
     */
    static void assertSameMemory(Machine eager, Machine lazy) {
        long countPage = eager.vcpus().getFirst().registers().rbx() / PAGE * PAGE;
        for (long at = 0; at < MEMORY; at += PAGE) {
            assertThat(lazy.memory().attribute(at)).as("attribute at %d", at).isEqualTo(eager.memory().attribute(at));
            if (at != countPage) {
                long mismatch = ownerPage(lazy, at).mismatch(ownerPage(eager, at));
                assertThat(mismatch).as("first differing byte of page %d", at).isEqualTo(-1);
            }
        }
        assertThat(ownerPage(lazy, DATA + PAGE).get(ValueLayout.JAVA_BYTE, 0)).isEqualTo(fill(DATA + PAGE));
        for (long hole : new long[] {DATA, DATA + 9 * PAGE, PRIVATE_START + 4 * PAGE}) {
            MemorySegment page = ownerPage(lazy, hole);
            assertThat(page.mismatch(MemorySegment.ofArray(new byte[(int) PAGE]))).as("hole at %d", hole).isEqualTo(-1);
        }
        assertThat(ownerPage(lazy, PRIVATE_START + PAGE).get(ValueLayout.JAVA_BYTE, 0)).isEqualTo(fill(PRIVATE_START + PAGE));
        assertThatThrownBy(() -> lazy.hostMapping().read(PRIVATE_START + PAGE, 8)).isInstanceOf(HostAccessFault.class);
    }

    /** The ticks the lazily loaded guest printed continue the saved count without a gap. */
    static void assertCountsOnFrom(long saved, String serial) {
        List<Long> ticks = MigrationTest.ticks(serial);
        assertThat(ticks).as("the lazily loaded guest counted").isNotEmpty();
        for (int i = 0; i < ticks.size(); i++) {
            assertThat(ticks.get(i)).as("tick %d after the saved count %d", i, saved).isEqualTo((saved + 1 + i) & 0xffffffffL);
        }
    }

    /** A source whose reads wait for a gate, take a while each, can fail, and are counted per extent. */
    static final class WatchedSource extends ForwardingPageSource {
        final CountDownLatch gate = new CountDownLatch(1);
        final AtomicInteger reads = new AtomicInteger();
        final Map<Long, Integer> readsPerExtent = new ConcurrentHashMap<>();
        volatile long delayMillis;

        WatchedSource(PageSource inner) {
            super(inner);
        }

        @Override
        public void read(Extent extent, MemorySegment into) throws IOException {
            reads.incrementAndGet();
            readsPerExtent.merge(extent.offset(), 1, Integer::sum);
            try {
                if (!gate.await(60, TimeUnit.SECONDS)) {
                    throw new IOException("the gate never opened");
                }
                Thread.sleep(delayMillis);
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
            inner.read(extent, into);
        }
    }

    @Test
    void aLazilyLoadedGuestCountsOnAndEndsWithTheEagerRestoresMemory() throws Exception {
        SecretKey key = key();
        try (Kvm kvm = Kvm.open()) {
            Path file = save(kvm, key);
            try (Machine eager = loadEagerly(kvm, key, file);
                 LazyMachineLoad lazy = Migration.load(kvm, PageSource.open(file, key, new Snapshot.ReplayGuard()), null)) {
                assertThat(lazy.eagerReason()).isEmpty();
                assertThat(lazy.machine().config().backing()).isEqualTo(Backing.MEMFD);
                assertThat(lazy.awaitFirstAccess(Duration.ofSeconds(60))).isPositive();
                assertThat(lazy.restore().await(Duration.ofSeconds(60))).isTrue();
                Thread.sleep(100);  // it runs on once every page is in
                Machine.Outcome outcome = lazy.pause();
                assertCountsOnFrom(savedCount(eager), outcome.serial());
                assertSameMemory(eager, lazy.machine());
                assertThat(lazy.restore().stats().pagesFetched()).isEqualTo(pagesWithBytes(file, key));
                lazy.machine().start().pause();  // a complete restore leaves a machine that runs again
            }
        }
    }

    /**
     * The guest runs while a slow pull brings the rest: its own accesses (code, stack, count)
     * fault and are served on demand, each page is brought once, and the bytes
     * it ran on are the saved ones (its count carries on).
     */
    @Test
    void theGuestTouchesPagesWhileThePullRunsEachPageBroughtOnce() throws Exception {
        SecretKey key = key();
        try (Kvm kvm = Kvm.open()) {
            Path file = save(kvm, key);
            WatchedSource source = new WatchedSource(PageSource.open(file, key, new Snapshot.ReplayGuard()));
            source.delayMillis = 20;  // the pull takes about 2 s: the guest starts inside its first read
            source.gate.countDown();
            try (Machine eager = loadEagerly(kvm, key, file);
                 LazyMachineLoad lazy = Migration.load(kvm, source, Backing.MEMFD)) {
                assertThat(lazy.awaitFirstAccess(Duration.ofSeconds(60))).isPositive();
                assertThat(lazy.restore().isComplete()).as("the guest ran before every page was in").isFalse();
                while (MigrationTest.ticks(lazy.machine().serial()).size() < 3) {
                    Thread.sleep(1);
                }
                assertThat(lazy.restore().isComplete()).as("it counted while the pull ran").isFalse();
                assertThat(lazy.restore().await(Duration.ofSeconds(60))).isTrue();
                Machine.Outcome outcome = lazy.pause();
                // Served by the fault server, or, where the pull had claimed the page first,
                // answered once the pull brought it: which one is a race of timing.
                assertThat(lazy.restore().stats().faults() + lazy.restore().stats().zeroFaults())
                        .as("the guest faulted while the pull ran").isPositive();
                assertThat(lazy.restore().stats().pagesFetched()).isEqualTo(pagesWithBytes(file, key));
                // Exactly once is per page: a claim takes the absent pages around the one asked
                // for, so when the guest's fault and the pull claim two parts of one extent, each
                // reads it for its own part (seen under .ci/run: the first extent read twice).
                // Each on-demand fetch can so split at most one extent the pull is reading, in two.
                long onDemand = lazy.restore().stats().faults() + lazy.restore().stats().zeroFaults()
                        + lazy.restore().stats().hostFetches();
                long reads = source.readsPerExtent.values().stream().mapToLong(Integer::longValue).sum();
                assertThat(reads).isLessThanOrEqualTo(source.readsPerExtent.size() + 2 * onDemand);
                assertCountsOnFrom(savedCount(eager), outcome.serial());
                assertSameMemory(eager, lazy.machine());
            }
        }
    }

    /**
     * The guest's first instruction fetch waits in a fault inside {@code KVM_RUN} behind a
     * closed source while 20 garbage collections (safepoints) are forced; then the source opens
     * and the guest counts on.
     */
    @Test
    void twentyCollectionsForcedWhileTheGuestFaultsComplete() throws Exception {
        SecretKey key = key();
        try (Kvm kvm = Kvm.open()) {
            Path file = save(kvm, key);
            WatchedSource source = new WatchedSource(PageSource.open(file, key, new Snapshot.ReplayGuard()));
            try (Machine eager = loadEagerly(kvm, key, file);
                 LazyMachineLoad lazy = Migration.load(kvm, source, Backing.MEMFD)) {
                while (source.reads.get() == 0) {
                    Thread.sleep(1);  // the pull waits on the source for the first extent
                }
                Thread.sleep(50);  // the vCPU's first fetch waits for that extent meanwhile
                for (int i = 0; i < 20; i++) {
                    System.gc();
                }
                assertThat(lazy.awaitFirstAccess(Duration.ZERO)).as("no exit before a page came").isEqualTo(-1);
                source.gate.countDown();
                assertThat(lazy.awaitFirstAccess(Duration.ofSeconds(60))).isPositive();
                assertThat(lazy.restore().await(Duration.ofSeconds(60))).isTrue();
                Machine.Outcome outcome = lazy.pause();
                assertCountsOnFrom(savedCount(eager), outcome.serial());
                assertSameMemory(eager, lazy.machine());
            }
        }
    }

    /** Every vCPU stopped for good, the machine refuses to run, the restore reports {@code errno}. */
    static void assertStoppedFor(LazyMachineLoad lazy, Errno errno) throws Exception {
        assertThatThrownBy(() -> lazy.restore().await(Duration.ofSeconds(60)))
                .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(errno));
        // The listener runs just after the failure is set: the vCPUs end within moments.
        Machine.Outcome outcome = lazy.running().await(Duration.ofSeconds(30));
        assertThat(lazy.machine().stoppedFor()).get().asString().contains("lazy restore failed");
        for (Machine.VcpuOutcome vcpu : outcome.vcpus()) {
            // Stopped by the failure listener, or out of KVM_RUN at a poisoned page: never a
            // timeout, which would mean it ran on until the pause.
            assertThat(vcpu.how()).as("vCPU %d", vcpu.id()).isIn("stopped", "Mmio", "InternalError", "MemoryFault");
        }
        assertThatThrownBy(() -> lazy.machine().start()).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("stopped for good");
    }

    /** The file is cut short under a running guest: the pull fails, the vCPUs stop, no hang. */
    @Test
    void aFileCutUnderARunningGuestStopsItsVcpus() throws Exception {
        SecretKey key = key();
        try (Kvm kvm = Kvm.open()) {
            Path file = save(kvm, key);
            WatchedSource source = new WatchedSource(PageSource.open(file, key, new Snapshot.ReplayGuard()));
            source.delayMillis = 5;
            try (LazyMachineLoad lazy = Migration.load(kvm, source, Backing.MEMFD)) {
                source.gate.countDown();
                assertThat(lazy.awaitFirstAccess(Duration.ofSeconds(60))).isPositive();
                try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
                    ch.truncate(ch.size() / 3);
                }
                assertStoppedFor(lazy, Errno.EBADMSG);
                assertThatThrownBy(() -> lazy.machine().hostMapping().read(DATA + PAGE, 8))
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EBADMSG));
            }
        }
    }

    /**
     * One byte of a shared page altered in the file: the guest runs on the pages as they come
     * (a shared record is authenticated only by the stream's digest), the digest fails once
     * every page is in, and the guest is stopped there.
     */
    @Test
    void anAlteredSharedPageStopsTheGuestWhenTheDigestFails() throws Exception {
        SecretKey key = key();
        try (Kvm kvm = Kvm.open()) {
            Path file = save(kvm, key);
            byte[] bytes = Files.readAllBytes(file);
            int at = indexOf(bytes, MARK);
            assertThat(at).as("the shared mark is in the file").isNotNegative();
            bytes[at + 3] ^= 1;
            Files.write(file, bytes);
            try (LazyMachineLoad lazy = Migration.load(kvm, PageSource.open(file, key, new Snapshot.ReplayGuard()), null)) {
                assertStoppedFor(lazy, Errno.EBADMSG);
            }
        }
    }

    @Test
    void aSourceThatIsNotAMachineOrOfAnotherSizeIsRefusedAndNothingRuns() throws Exception {
        SecretKey key = key();
        Path file = dir.resolve("memory.gsnap");
        try (GuestMemory memory = GuestMemory.create(MEMORY, dev.guestmemfd.Flag.MMAP.bit() | dev.guestmemfd.Flag.INIT_SHARED.bit(),
                Backing.MEMFD); OutputStream out = Files.newOutputStream(file)) {
            Snapshot.write(memory.bind(new dev.guestmemfd.Owner() { }, 0, MEMORY), key, out);
        }
        try (Kvm kvm = Kvm.open()) {
            PageSource source = PageSource.open(file, key, new Snapshot.ReplayGuard());
            assertThat(Migration.describedMachine(source)).isEmpty();
            assertThatThrownBy(() -> Migration.load(kvm, source, null))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EBADMSG));
            assertThatThrownBy(() -> Migration.load(kvm, null, null))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThatThrownBy(() -> Migration.load(null, source, null))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        }
    }

    private static int indexOf(byte[] haystack, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= haystack.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (haystack[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }
}
