package dev.guestmemfd;

import static dev.guestmemfd.Errors.assertErrno;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.linux.ProcSelf;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The behaviour every backing must show: run once per backing by a subclass.
 */
abstract class GuestMemoryContract {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long SIZE = 64 * PAGE;

    /** {@return the size of the files under test: 64 pages, or one huge page where the backing's pages are larger} */
    long size() {
        return Math.max(SIZE, backing().blockSize());
    }

    /** {@return the pages that hold memory once {@code pages} pages from a block's start are allocated: whole blocks} */
    long held(long pages) {
        long perBlock = backing().blockSize() / PAGE;
        return (pages + perBlock - 1) / perBlock * perBlock;
    }
    static final long MMAP = Flag.MMAP.bit();
    static final long SHARED = Flag.INIT_SHARED.bit();

    /** What the descriptors of memory files and VMs point to: the JDK opens others lazily. */
    static final String[] MEMORY_FILES = {"memfd:", "secretmem", "kvm"};
    private int descriptorsBefore;
    private final List<GuestMemory> opened = new ArrayList<>();

    /** {@return the backing under test} */
    abstract Backing backing();

    /** {@return the flags a file of this backing needs on top of the test's} */
    long extraFlags() {
        return 0;
    }

    /**
     * {@return the binding of the owner under test over the whole of {@code m}, or null to
     * test the library without one} Subclasses in the models module plug each architecture
     * model, and the KVM owner, in here.
     */
    Binding bindOwnerUnderTest(GuestMemory m) {
        return null;
    }

    /** {@return true when the owner under test lets bytes cross a conversion (PRESERVE)} */
    boolean ownerKeepsContent() {
        return true;
    }

    private Binding ownerUnderTest;

    GuestMemory create(long flags) {
        GuestMemory m = GuestMemory.create(size(), flags | extraFlags(), backing());
        opened.add(m);
        ownerUnderTest = bindOwnerUnderTest(m);
        return m;
    }

    /** {@return the owner's binding over all of {@code m}: the one under test, or a plain one} */
    Binding owner(GuestMemory m) {
        return ownerUnderTest != null && ownerUnderTest.memory() == m ? ownerUnderTest : m.bind(new Owner() { }, 0, size());
    }

    /** Skips a test that binds owners of its own: the owner under test holds the whole file. */
    void assumeOwnOwners() {
        org.junit.jupiter.api.Assumptions.assumeTrue(ownerUnderTest == null,
                "the owner under test binds the whole file; this test binds owners of its own");
    }

    /** {@return PRESERVE where the owner under test keeps content, else UNSPECIFIED (every owner's, both ways)} */
    Content keep() {
        return ownerKeepsContent() ? Content.PRESERVE : Content.UNSPECIFIED;
    }

    @BeforeEach
    void countDescriptors() {
        descriptorsBefore = ProcSelf.descriptorsTo(MEMORY_FILES);
    }

    @AfterEach
    void closeAndCheckLeaks() {
        opened.forEach(GuestMemory::close);
        assertThat(ProcSelf.descriptorsTo(MEMORY_FILES)).as("memory and KVM descriptors left open").isEqualTo(descriptorsBefore);
    }

    static void assertUnchanged(GuestMemory m, List<PageRun> before) {
        assertThat(m.pageRuns()).isEqualTo(before);
    }

    @Test
    void createRefusesBadSizesAndFlags() {
        for (long bad : new long[] {0, -PAGE, PAGE + 1, 4095}) {
            assertErrno(() -> GuestMemory.create(bad, MMAP | extraFlags(), backing()), "EINVAL");
        }
        assertErrno(() -> GuestMemory.create(size(), 1L << 3 | extraFlags(), backing()), "EINVAL");
        assertErrno(() -> GuestMemory.create(size(), 1L << 63 | extraFlags(), backing()), "EINVAL");
    }

    @Test
    void newFileHasItsSizeAndNoMemory() {
        GuestMemory m = create(MMAP | SHARED);
        assertThat(m.size()).isEqualTo(size());
        assertThat(m.blockSize()).isEqualTo(backing().blockSize());
        assertThat(m.backing()).isEqualTo(backing());
        assertThat(m.pageCounts()).isEqualTo(new PageCounts(size() / PAGE, size() / PAGE, 0, 0));
        assertThat(m.pageRuns()).containsExactly(new PageRun(0, size(), Attribute.SHARED, false));
    }

    @Test
    void withoutInitSharedEveryPageStartsPrivate() {
        GuestMemory m = create(MMAP);
        assertThat(m.attribute(0)).isEqualTo(Attribute.PRIVATE);
        assertThat(m.pageCounts().privates()).isEqualTo(size() / PAGE);
        try (HostMapping map = m.map(0, size())) {
            HostAccessFault f = (HostAccessFault) assertErrno(() -> map.read(0, 8), "EFAULT");
            assertThat(f.errorOffset()).isZero();
        }
    }

    @Test
    void fallocateFollowsTheKernelsRulesAndChangesNothingWhenRefused() {
        GuestMemory m = create(MMAP | SHARED);
        m.allocate(PAGE, PAGE);
        List<PageRun> before = m.pageRuns();
        assertErrno(() -> m.fallocate(0, 0, PAGE), "EOPNOTSUPP");
        assertErrno(() -> m.fallocate(GuestMemory.PUNCH_HOLE, 0, PAGE), "EOPNOTSUPP");
        assertErrno(() -> m.fallocate(GuestMemory.KEEP_SIZE | 0x10, 0, PAGE), "EOPNOTSUPP");
        assertErrno(() -> m.fallocate(GuestMemory.KEEP_SIZE, 1, PAGE), "EINVAL");
        assertErrno(() -> m.fallocate(GuestMemory.KEEP_SIZE, 0, PAGE + 1), "EINVAL");
        assertErrno(() -> m.fallocate(GuestMemory.KEEP_SIZE, 0, 0), "EINVAL");
        assertErrno(() -> m.fallocate(GuestMemory.KEEP_SIZE, -PAGE, PAGE), "EINVAL");
        assertErrno(() -> m.allocate(size() - PAGE, 2 * PAGE), "EINVAL");
        assertErrno(() -> m.allocate(size(), PAGE), "EINVAL");
        assertErrno(() -> m.punchHole(PAGE, PAGE / 2), "EINVAL");
        assertUnchanged(m, before);
        m.punchHole(size(), 16 * PAGE);       // entirely past the end: a no-op
        m.punchHole(size() - PAGE, 16 * PAGE); // clamped to the end
        assertUnchanged(m, before);
    }

    @Test
    void allocatedPagesAreCountedAndPunchedOnesReadZero() {
        GuestMemory m = create(MMAP | SHARED);
        m.allocate(0, 4 * PAGE);
        assertThat(m.pageCounts().allocated()).isEqualTo(held(4));
        try (HostMapping map = m.map(0, size())) {
            map.write(PAGE, filled(2 * PAGE, 0x5a));
            assertThat(map.read(PAGE, 8)).containsOnly(0x5a);
            m.punchHole(PAGE, PAGE);
            // Counted before reading: reading a hole through a mapping faults a zero page in.
            // Part of a huge page is zeroed, and the page stays.
            assertThat(m.pageCounts().allocated()).isEqualTo(m.returnsPunchedMemory() ? 3 : held(4));
            assertThat(map.read(PAGE, (int) PAGE)).containsOnly(0);
            assertThat(map.read(2 * PAGE, 8)).containsOnly(0x5a);
        }
    }

    @Test
    void everyPageIsZeroTheFirstTimeAnyoneSeesIt() {
        GuestMemory m = create(MMAP | SHARED);
        try (HostMapping map = m.map(0, size())) {
            assertThat(map.read(0, (int) size())).containsOnly(0);
        }
        assertThat(owner(m).pages().toArray(JAVA_BYTE)).containsOnly(0);
    }

    @Test
    void prefaultAllocatesSharedPagesAndRefusesPrivateOnes() {
        GuestMemory m = create(MMAP | SHARED);
        m.convert(8 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        try (HostMapping map = m.map(0, size())) {
            map.prefault(0, 4 * PAGE);
            assertThat(m.pageCounts().allocated()).isEqualTo(held(4));
            HostAccessFault f = (HostAccessFault) assertErrno(() -> map.prefault(4 * PAGE, 8 * PAGE), "EFAULT");
            assertThat(f.errorOffset()).isEqualTo(8 * PAGE);
            assertThat(m.pageCounts().allocated()).isEqualTo(held(4));
        }
    }

    @Test
    void mapNeedsMmapAndRefusesPrivateMappings() {
        GuestMemory without = create(SHARED);
        assertErrno(() -> without.map(0, PAGE), "ENODEV");
        GuestMemory m = create(MMAP | SHARED);
        assertErrno(() -> m.map(0, PAGE, MapType.PRIVATE), "EINVAL");
        assertErrno(() -> m.map(1, PAGE), "EINVAL");
        assertErrno(() -> m.map(0, 0), "EINVAL");
    }

    @Test
    void accessPastTheEndFaultsAndWritesNothing() {
        GuestMemory m = create(MMAP | SHARED);
        try (HostMapping map = m.map(size() - PAGE, 4 * PAGE)) {
            map.write(0, filled(PAGE, 1));
            HostAccessFault f = (HostAccessFault) assertErrno(() -> map.write(0, filled(2 * PAGE, 2)), "EFAULT");
            assertThat(f.errorOffset()).isEqualTo(size());
            assertThat(map.read(0, (int) PAGE)).containsOnly(1);
            assertErrno(() -> map.read(PAGE, 1), "EFAULT");
            assertErrno(() -> map.lease(PAGE, PAGE), "EFAULT");
            assertErrno(() -> map.read(4 * PAGE, 1), "EFAULT");  // leaves the mapping
        }
    }

    @Test
    void conversionToPrivateRevokesLeasesAndTheMappingLivesOn() {
        GuestMemory m = create(MMAP | SHARED);
        try (HostMapping map = m.map(0, size())) {
            Lease over = map.lease(2 * PAGE, 2 * PAGE);
            Lease beside = map.lease(8 * PAGE, PAGE);
            over.segment().set(JAVA_LONG, 0, 0x1234);
            m.convert(3 * PAGE, PAGE, Attribute.PRIVATE, keep());
            assertThat(over.isValid()).isFalse();
            assertThatThrownBy(() -> over.segment().get(JAVA_LONG, 0)).isInstanceOf(IllegalStateException.class);
            assertThat(beside.isValid()).isTrue();
            beside.segment().set(JAVA_LONG, 0, 7);
            assertThat(map.read(2 * PAGE, 8)).isEqualTo(longBytes(0x1234));
            assertErrno(() -> map.read(3 * PAGE, 1), "EFAULT");
            assertErrno(() -> map.lease(2 * PAGE, 2 * PAGE), "EFAULT");
            m.convert(3 * PAGE, PAGE, Attribute.SHARED, keep());
            try (Lease again = map.lease(2 * PAGE, 2 * PAGE)) {
                assertThat(again.segment().get(JAVA_LONG, 0)).as("page 2 never left the host").isEqualTo(0x1234);
                assertThat(again.segment().get(JAVA_LONG, PAGE)).isZero();
            }
            beside.close();
            assertThat(beside.isValid()).isFalse();
        }
    }

    @Test
    void contentModesFollowTheKernel() {
        org.junit.jupiter.api.Assumptions.assumeTrue(ownerKeepsContent(), "the owner under test cannot keep content across a conversion");
        GuestMemory m = create(MMAP | SHARED);
        Binding owner = owner(m);
        try (HostMapping map = m.map(0, size())) {
            map.write(0, filled(4 * PAGE, 0x11));
            m.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            m.convert(2 * PAGE, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);  // no promise about the bytes
            assertThat(owner.pages().asSlice(0, 2 * PAGE).toArray(JAVA_BYTE)).containsOnly(0x11);
            owner.pages().asSlice(0, 4 * PAGE).fill((byte) 0x22);   // the guest writes its secrets
            m.convert(0, 2 * PAGE, Attribute.SHARED, Content.ZERO);
            m.convert(2 * PAGE, 2 * PAGE, Attribute.SHARED, Content.PRESERVE);
            assertThat(map.read(0, (int) (2 * PAGE))).containsOnly(0);
            assertThat(map.read(2 * PAGE, (int) (2 * PAGE))).containsOnly(0x22);
        }
    }

    @Test
    void zeroTowardsPrivateIsRefusedWithTheRangeStartAndChangesNothing() {
        GuestMemory m = create(MMAP | SHARED);
        try (HostMapping map = m.map(0, SIZE)) {
            map.write(0, filled(4 * PAGE, 0x33));
            m.convert(PAGE, PAGE, Attribute.PRIVATE, keep());
            Lease lease = map.lease(2 * PAGE, 2 * PAGE);
            List<PageRun> before = m.pageRuns();
            long conversions = m.conversions();
            // Over pages that would change, over one already private, and over the whole file.
            for (long[] r : new long[][] {{2 * PAGE, 2 * PAGE}, {PAGE, PAGE}, {0, SIZE}}) {
                GuestMemoryException e = assertErrno(() -> m.convert(r[0], r[1], Attribute.PRIVATE, Content.ZERO), "EOPNOTSUPP");
                assertThat(e.errorOffset()).isEqualTo(r[0]);
                assertUnchanged(m, before);
                assertThat(m.conversions()).isEqualTo(conversions);
                assertThat(lease.isValid()).as("nothing revoked by a refused conversion").isTrue();
                assertThat(map.read(2 * PAGE, (int) (2 * PAGE))).containsOnly(0x33);
            }
            // The range is checked first, as the kernel checks it: a bad range is EINVAL, not EOPNOTSUPP.
            assertThat(assertErrno(() -> m.convert(1, PAGE, Attribute.PRIVATE, Content.ZERO), "EINVAL").errorOffset()).isEqualTo(-1);
            lease.close();
        }
    }

    @Test
    void convertingWhatIsAlreadyInTheTargetStateKeepsItButTheModeAppliesToTheWholeRange() {
        GuestMemory m = create(MMAP | SHARED);
        try (HostMapping map = m.map(0, size()); Lease lease = map.lease(0, size())) {
            lease.segment().fill((byte) 3);
            m.convert(0, size(), Attribute.SHARED, keep());
            m.convert(0, size(), Attribute.SHARED, Content.UNSPECIFIED);
            assertThat(map.read(0, (int) size())).containsOnly(3);
            // ZERO applies to every page of the range, as KVM_SET_MEMORY_ATTRIBUTES2 applies it,
            // also where no page changes state; the host keeps its lease: the pages stay shared.
            m.convert(2 * PAGE, 2 * PAGE, Attribute.SHARED, Content.ZERO);
            assertThat(lease.isValid()).isTrue();
            assertThat(map.read(0, (int) (2 * PAGE))).containsOnly(3);
            assertThat(map.read(2 * PAGE, (int) (2 * PAGE))).containsOnly(0);
            assertThat(lease.segment().asSlice(2 * PAGE, 2 * PAGE).toArray(JAVA_BYTE)).containsOnly(0);
            assertThat(map.read(4 * PAGE, (int) (size() - 4 * PAGE))).containsOnly(3);
            assertThat(m.conversions()).isZero();
        }
    }

    @Test
    void zeroTowardsSharedZeroesThePagesThatWereSharedAlready() {
        GuestMemory m = create(MMAP | SHARED);
        try (HostMapping map = m.map(0, SIZE)) {
            map.write(0, filled(4 * PAGE, 0x44));
            m.convert(PAGE, PAGE, Attribute.PRIVATE, keep());
            m.convert(0, 4 * PAGE, Attribute.SHARED, Content.ZERO);
            assertThat(map.read(0, (int) (4 * PAGE))).containsOnly(0);
            assertThat(m.attribute(PAGE)).isEqualTo(Attribute.SHARED);
        }
    }

    @Test
    void conversionRefusesBadRangesAndChangesNothing() {
        GuestMemory m = create(MMAP | SHARED);
        m.convert(4 * PAGE, 4 * PAGE, Attribute.PRIVATE, keep());
        List<PageRun> before = m.pageRuns();
        assertErrno(() -> m.convert(1, PAGE, Attribute.PRIVATE, Content.ZERO), "EINVAL");
        assertErrno(() -> m.convert(0, PAGE - 1, Attribute.PRIVATE, Content.ZERO), "EINVAL");
        assertErrno(() -> m.convert(0, 0, Attribute.PRIVATE, Content.ZERO), "EINVAL");
        assertErrno(() -> m.convert(size() - PAGE, 2 * PAGE, Attribute.PRIVATE, Content.ZERO), "EINVAL");
        assertErrno(() -> m.convert(-PAGE, 2 * PAGE, Attribute.PRIVATE, Content.ZERO), "EINVAL");
        assertErrno(() -> m.convert(PAGE, Long.MAX_VALUE - PAGE + 1, Attribute.PRIVATE, Content.ZERO), "EINVAL");
        assertUnchanged(m, before);
    }

    @Test
    void pinnedPagesMakeConversionFailWithTheFirstPinnedOffset() {
        GuestMemory m = create(MMAP | SHARED);
        m.pinWait(Duration.ofMillis(20));
        try (HostMapping map = m.map(0, size())) {
            map.write(5 * PAGE, filled(PAGE, 9));
            Lease lease = map.lease(0, PAGE);
            List<PageRun> before = m.pageRuns();
            try (Pin pin = m.pin(5 * PAGE, 2 * PAGE)) {
                GuestMemoryException e = assertErrno(
                        () -> m.convert(0, 8 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED), "EAGAIN");
                assertThat(e.errorOffset()).isEqualTo(5 * PAGE);
                assertUnchanged(m, before);
                assertThat(lease.isValid()).as("nothing revoked by a refused conversion").isTrue();
                assertThat(pin.segment().get(JAVA_BYTE, 0)).isEqualTo((byte) 9);
            }
            m.convert(0, 8 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            assertThat(m.attribute(5 * PAGE)).isEqualTo(Attribute.PRIVATE);
            assertThat(lease.isValid()).isFalse();
        }
    }

    @Test
    void aHostAccessInFlightMakesConversionFailWithItsPageAsTheErrorOffset() throws Exception {
        GuestMemory m = create(MMAP | SHARED);
        m.pinWait(Duration.ofMillis(20));
        try (HostMapping map = m.map(0, SIZE)) {
            java.util.concurrent.CountDownLatch inside = new java.util.concurrent.CountDownLatch(1);
            java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
            CompletableFuture<Void> access = CompletableFuture.runAsync(() -> map.access(32 * PAGE, PAGE, seg -> {
                inside.countDown();
                try {
                    release.await(30, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }));
            try {
                assertThat(inside.await(30, TimeUnit.SECONDS)).isTrue();
                List<PageRun> before = m.pageRuns();
                long conversions = m.conversions();
                GuestMemoryException e = assertErrno(
                        () -> m.convert(16 * PAGE, 32 * PAGE, Attribute.PRIVATE, keep()), "EAGAIN");
                // In-flight counters are kept per group of pages; page 32 starts one, so it is named exactly.
                assertThat(e.errorOffset()).isEqualTo(32 * PAGE);
                assertUnchanged(m, before);
                assertThat(m.conversions()).isEqualTo(conversions);
            } finally {
                release.countDown();
            }
            access.get(30, TimeUnit.SECONDS);
            m.convert(16 * PAGE, 32 * PAGE, Attribute.PRIVATE, keep());
            assertThat(m.attribute(32 * PAGE)).isEqualTo(Attribute.PRIVATE);
        }
    }

    @Test
    void conversionWaitsForAPinThatIsDroppedInTime() throws Exception {
        GuestMemory m = create(MMAP | SHARED);
        m.pinWait(Duration.ofSeconds(30));
        Pin pin = m.pin(0, PAGE);
        CompletableFuture<Void> conversion = CompletableFuture.runAsync(
                () -> m.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED));
        Thread.sleep(50);
        assertThat(conversion).isNotDone();
        pin.close();
        conversion.get(30, TimeUnit.SECONDS);
        assertThat(m.attribute(0)).isEqualTo(Attribute.PRIVATE);
        assertThatThrownBy(() -> pin.segment().get(JAVA_BYTE, 0)).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void pinsRefusePrivatePagesAndBadRanges() {
        GuestMemory m = create(MMAP | SHARED);
        m.convert(2 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        GuestMemoryException e = assertErrno(() -> m.pin(0, 4 * PAGE), "EFAULT");
        assertThat(e.errorOffset()).isEqualTo(2 * PAGE);
        assertErrno(() -> m.pin(0, size() + PAGE), "EINVAL");
        assertErrno(() -> m.pin(1, PAGE), "EINVAL");
    }

    @Test
    void ownersSeeInvalidationsAndPreparationsInOrder() {
        GuestMemory m = create(MMAP | SHARED);
        assumeOwnOwners();
        List<String> calls = new ArrayList<>();
        Owner recorder = new Owner() {
            @Override
            public void invalidateBegin(Binding b, long offset, long length, Invalidation why) {
                calls.add("begin " + offset / PAGE + "+" + length / PAGE);
            }

            @Override
            public void invalidateEnd(Binding b, long offset, long length, Invalidation why) {
                calls.add("end " + offset / PAGE + "+" + length / PAGE);
            }

            @Override
            public void prepareInaccessible(Binding b, long offset, long length, Content content) {
                calls.add("inaccessible " + offset / PAGE + "+" + length / PAGE);
            }

            @Override
            public void prepareAccessible(Binding b, long offset, long length, Content content) {
                calls.add("accessible " + offset / PAGE + "+" + length / PAGE);
            }

            @Override
            public void release(Binding b) {
                calls.add("release");
            }
        };
        Binding b = m.bind(recorder, 4 * PAGE, 8 * PAGE);
        m.convert(0, 6 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
        m.convert(0, 6 * PAGE, Attribute.SHARED, Content.PRESERVE);
        m.punchHole(10 * PAGE, 10 * PAGE);
        m.punchHole(30 * PAGE, PAGE);  // outside the binding: not told
        b.close();
        b.close();
        assertThat(calls).containsExactly(
                "begin 4+2", "inaccessible 4+2", "end 4+2",
                "begin 4+2", "accessible 4+2", "end 4+2",
                "begin 10+2", "end 10+2",
                "release");
    }

    @Test
    void anOwnersRefusalRollsTheWholeRangeBack() {
        GuestMemory m = create(MMAP | SHARED);
        assumeOwnOwners();
        List<String> calls = new ArrayList<>();
        Owner willing = new Owner() {
            @Override
            public void prepareInaccessible(Binding b, long offset, long length, Content content) {
                calls.add("willing inaccessible " + offset / PAGE);
            }

            @Override
            public void prepareAccessible(Binding b, long offset, long length, Content content) {
                calls.add("willing accessible " + offset / PAGE);
            }

            @Override
            public void rollback(Binding b, long offset, long length, Attribute attribute) {
                calls.add("willing rollback " + offset / PAGE + " to " + attribute);
            }
        };
        Owner refusing = new Owner() {
            @Override
            public void prepareInaccessible(Binding b, long offset, long length, Content content) throws OwnerRefusal {
                throw new OwnerRefusal(offset + PAGE, "page is still mapped by the guest's firmware");
            }
        };
        m.bind(willing, 0, 4 * PAGE);
        m.bind(refusing, 4 * PAGE, 4 * PAGE);
        List<PageRun> before = m.pageRuns();
        GuestMemoryException e = assertErrno(() -> m.convert(0, 8 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED), "EPERM");
        assertThat(e.errorOffset()).isEqualTo(5 * PAGE);
        assertThat(e.getMessage()).contains("still mapped by the guest's firmware");
        assertUnchanged(m, before);
        assertThat(calls).containsExactly("willing inaccessible 0", "willing rollback 0 to SHARED");
    }

    @Test
    void onlyTheOwnerReachesPrivatePages() {
        GuestMemory m = create(MMAP | SHARED);
        Binding b = owner(m);
        try (HostMapping map = m.map(0, size())) {
            m.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            b.pages().set(JAVA_LONG, 0, 0x5ec12e7L);
            assertThat(b.pages().get(JAVA_LONG, 0)).isEqualTo(0x5ec12e7L);
            assertErrno(() -> map.read(0, 8), "EFAULT");
        }
    }

    @Test
    void bindingTheSameFileOffsetsTwiceIsEinval() {
        GuestMemory m = create(MMAP | SHARED);
        assumeOwnOwners();
        m.bind(new Owner() { }, 0, 8 * PAGE);
        GuestMemoryException e = assertErrno(() -> m.bind(new Owner() { }, 4 * PAGE, 8 * PAGE), "EINVAL");
        assertThat(e.errorOffset()).isEqualTo(4 * PAGE);
        assertErrno(() -> m.bind(new Owner() { }, 0, size() + PAGE), "EINVAL");
        assertErrno(() -> m.bind(new Owner() { }, PAGE / 2, PAGE), "EINVAL");
        m.bind(new Owner() { }, 8 * PAGE, 8 * PAGE);
    }

    @Test
    void populateWritesPrivatePagesAndMeasuresThem() {
        GuestMemory m = create(MMAP);
        Binding b = owner(m);
        LaunchDigest digest = new LaunchDigest();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment image = arena.allocate(PAGE + 100);
            image.fill((byte) 0x90);
            b.populate(2 * PAGE, image, digest);
        }
        assertThat(b.pages().asSlice(2 * PAGE, PAGE + 100).toArray(JAVA_BYTE)).containsOnly(0x90);
        assertThat(b.pages().asSlice(3 * PAGE + 100, PAGE - 100).toArray(JAVA_BYTE)).containsOnly(0);
        assertThat(digest.digest()).hasSize(48);
        LaunchDigest same = new LaunchDigest();
        byte[] pageOne = new byte[(int) PAGE];
        Arrays.fill(pageOne, (byte) 0x90);
        byte[] pageTwo = new byte[(int) PAGE];
        Arrays.fill(pageTwo, 0, 100, (byte) 0x90);
        same.page(2 * PAGE, MemorySegment.ofArray(pageOne));
        same.page(3 * PAGE, MemorySegment.ofArray(pageTwo));
        assertThat(digest.hex()).isEqualTo(same.hex());
        m.convert(8 * PAGE, PAGE, Attribute.SHARED, Content.ZERO);
        assertErrno(() -> b.populate(8 * PAGE, MemorySegment.ofArray(new byte[1]), null), "EINVAL");
        assertErrno(() -> b.populate(size(), MemorySegment.ofArray(new byte[1]), null), "EINVAL");
    }

    @Test
    void metadataFollowsConversionsNotSize() {
        GuestMemory m = create(MMAP | SHARED);
        long empty = m.metadataBytes();
        m.convert(0, size(), Attribute.PRIVATE, keep());
        assertThat(m.metadataBytes()).isEqualTo(empty);
        assertThat(m.pageRuns()).hasSize(1);
        for (long p = 0; p < 64; p += 2) {
            m.convert(p * PAGE, PAGE, Attribute.SHARED, keep());
        }
        assertThat(m.pageRuns()).hasSize(64);
        m.convert(0, size(), Attribute.SHARED, keep());
        assertThat(m.pageRuns()).hasSize(1);
        assertThat(m.conversions()).isEqualTo(34);
    }

    @Test
    void closeRevokesEverythingAndLaterCallsAreEbadf() {
        GuestMemory m = create(MMAP | SHARED);
        assumeOwnOwners();
        List<String> calls = new ArrayList<>();
        m.bind(new Owner() {
            @Override
            public void release(Binding b) {
                calls.add("release");
            }
        }, 0, PAGE);
        HostMapping map = m.map(0, size());
        Lease lease = map.lease(0, PAGE);
        Pin pin = m.pin(PAGE, PAGE);
        m.close();
        m.close();
        assertThat(calls).containsExactly("release");
        assertThat(lease.isValid()).isFalse();
        assertThatThrownBy(() -> pin.segment().get(JAVA_BYTE, 0)).isInstanceOf(IllegalStateException.class);
        assertErrno(() -> map.read(0, 1), "EBADF");
        assertErrno(() -> m.allocate(0, PAGE), "EBADF");
        assertErrno(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.ZERO), "EBADF");
        assertErrno(() -> m.map(0, PAGE), "EBADF");
        pin.close();
        lease.close();
        map.close();
    }

    @Test
    void flagsAreReported() {
        GuestMemory m = create(MMAP | SHARED);
        assertThat(m.flags()).containsAll(EnumSet.of(Flag.MMAP, Flag.INIT_SHARED));
    }

    static MemorySegment filled(long bytes, int value) {
        byte[] data = new byte[(int) bytes];
        Arrays.fill(data, (byte) value);
        return MemorySegment.ofArray(data);
    }

    static byte[] longBytes(long value) {
        byte[] b = new byte[8];
        MemorySegment.ofArray(b).set(JAVA_LONG_UNALIGNED, 0, value);
        return b;
    }
}
