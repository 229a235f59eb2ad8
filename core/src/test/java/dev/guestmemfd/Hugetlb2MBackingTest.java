package dev.guestmemfd;

import static dev.guestmemfd.Errors.assertErrno;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.testing.RequiresBacking;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The contract on 2 MiB huge pages, and what is particular to them: 4 KiB attributes and
 * offsets inside a huge page, punches that zero part of a huge page or return all of it,
 * revocation of part of a huge page under a segment a native call holds, the pool running
 * out, and populated pages touched without a fault.
 */
@RequiresBacking(Backing.HUGETLB_2M)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class Hugetlb2MBackingTest extends GuestMemoryContract {
    static final long HUGE = 2L << 20;
    static final long PAGES_PER_HUGE = HUGE / PAGE;

    @Override
    Backing backing() {
        return Backing.HUGETLB_2M;
    }

    private GuestMemory file(long bytes) {
        GuestMemory m = GuestMemory.create(bytes, MMAP | SHARED, Backing.HUGETLB_2M);
        m.pinWait(Duration.ofMillis(50));
        return m;
    }

    @Test
    void aSizeThatIsNoMultipleOfTheHugePageIsRefused() {
        for (long bad : new long[] {PAGE, HUGE - PAGE, HUGE + PAGE, 3 * HUGE / 2}) {
            GuestMemoryException e = assertErrno(() -> GuestMemory.create(bad, MMAP, Backing.HUGETLB_2M), "EINVAL");
            assertThat(e.getMessage()).contains("huge page");
        }
        assertThat(Backing.HUGETLB_2M.blockSize()).isEqualTo(HUGE);
        assertThat(Backing.HUGETLB_1G.blockSize()).isEqualTo(1L << 30);
    }

    @Test
    void punchingPartOfAHugePageZeroesItAndKeepsThePage() {
        try (GuestMemory m = file(2 * HUGE); HostMapping map = m.map(0, 2 * HUGE)) {
            m.allocate(0, PAGE);  // one 4 KiB page: the whole huge page under it
            assertThat(m.pageCounts().allocated()).isEqualTo(PAGES_PER_HUGE);
            map.write(0, filled(HUGE, 0x5a));
            PunchResult part = m.punch(2 * PAGE, PAGE);
            assertThat(part).isEqualTo(new PunchResult(0, PAGE));
            assertThat(map.read(2 * PAGE, (int) PAGE)).containsOnly(0);
            assertThat(map.read(PAGE, (int) PAGE)).containsOnly(0x5a);
            assertThat(map.read(3 * PAGE, (int) PAGE)).containsOnly(0x5a);
            assertThat(m.pageCounts().allocated()).as("the huge page stays").isEqualTo(PAGES_PER_HUGE);

            PunchResult whole = m.punch(0, HUGE + PAGE);
            assertThat(whole).isEqualTo(new PunchResult(HUGE, PAGE));
            assertThat(m.pageCounts().allocated()).as("the whole huge page went back").isZero();
            assertThat(map.read(0, (int) HUGE)).containsOnly(0);
        }
    }

    @Test
    void aConversionWithZeroOverPartOfAHugePageZeroesThatPart() {
        try (GuestMemory m = file(HUGE); HostMapping map = m.map(0, HUGE)) {
            map.write(0, filled(HUGE, 0x33));
            // ZERO is a mode towards shared only: the guest's pages come back zeroed, the rest of
            // the huge page keeps its bytes; and over pages already shared it zeroes them too.
            m.convert(4 * PAGE, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            Binding owner = m.bind(new Owner() { }, 0, HUGE);
            owner.pages().asSlice(4 * PAGE, 2 * PAGE).fill((byte) 0x44);
            m.convert(4 * PAGE, 2 * PAGE, Attribute.SHARED, Content.ZERO);
            assertThat(map.read(4 * PAGE, (int) (2 * PAGE))).containsOnly(0);
            assertThat(map.read(0, (int) (4 * PAGE))).containsOnly(0x33);
            assertThat(map.read(6 * PAGE, (int) (HUGE - 6 * PAGE))).containsOnly(0x33);
            m.convert(8 * PAGE, PAGE, Attribute.SHARED, Content.ZERO);
            assertThat(map.read(8 * PAGE, (int) PAGE)).containsOnly(0);
            assertThat(map.read(9 * PAGE, (int) PAGE)).containsOnly(0x33);
            assertThat(m.attribute(4 * PAGE)).isEqualTo(Attribute.SHARED);
            assertThat(m.attribute(8 * PAGE)).isEqualTo(Attribute.SHARED);
            assertThat(m.pageCounts().allocated()).isEqualTo(PAGES_PER_HUGE);
        }
    }

    @Test
    void leasesAndPinsAt4KiBOffsetsReachTheirPagesAndOnlyThem() {
        try (GuestMemory m = file(2 * HUGE); HostMapping map = m.map(PAGE, 2 * HUGE - PAGE)) {
            map.write(HUGE - 2 * PAGE, filled(2 * PAGE, 7));  // across the huge page boundary
            try (Lease lease = map.lease(HUGE - 2 * PAGE, 2 * PAGE); Pin pin = m.pin(HUGE - PAGE, 2 * PAGE)) {
                assertThat(lease.segment().byteSize()).isEqualTo(2 * PAGE);
                assertThat(lease.segment().toArray(JAVA_BYTE)).containsOnly(7);
                pin.segment().set(JAVA_LONG, PAGE, 0x1122334455667788L);
                assertThat(m.pageCounts().allocated()).isEqualTo(2 * PAGES_PER_HUGE);
            }
            assertThat(map.read(HUGE - PAGE, 8)).isEqualTo(java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.nativeOrder())
                    .putLong(0, 0x1122334455667788L).array());
        }
    }

    @Test
    void aPageWrittenOnlyThroughALeaseStaysCountedAfterTheLeaseEnds() {
        try (GuestMemory m = file(2 * HUGE); HostMapping map = m.map(0, 2 * HUGE)) {
            try (Lease lease = map.lease(HUGE + PAGE, PAGE)) {
                lease.segment().set(JAVA_LONG, 0, 42);
            }
            assertThat(m.pageCounts().allocated()).isEqualTo(PAGES_PER_HUGE);
            assertThat(m.pageRuns()).contains(new PageRun(HUGE, HUGE, Attribute.SHARED, true));
        }
    }

    @Test
    void aConversionOfPartOfAHugePageHidesItFromASegmentANativeCallHolds() throws Exception {
        try (GuestMemory m = file(HUGE); HostMapping map = m.map(0, HUGE)) {
            map.write(0, filled(2 * PAGE, 0x11));
            Binding binding = m.bind(new Owner() { }, 0, HUGE);
            Lease lease = map.lease(PAGE, PAGE);  // at a 4 KiB offset inside the huge page
            try (NativeHoldTest.BlockedRead read = new NativeHoldTest.BlockedRead(lease.segment())) {
                m.convert(PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                assertThat(lease.isValid()).isFalse();
                binding.pages().set(JAVA_LONG, PAGE, NativeHoldTest.SECRET);
                assertThat(lease.segment().get(JAVA_LONG, 0)).as("the held segment").isNotEqualTo(NativeHoldTest.SECRET);
                // The rest of the huge page is still shared, and host access to it still works.
                assertThat(map.read(0, (int) PAGE)).containsOnly(0x11);
                map.write(2 * PAGE, filled(PAGE, 0x22));
                assertThat(binding.pages().get(JAVA_BYTE, 2 * PAGE)).isEqualTo((byte) 0x22);
                assertThat(read.release(NativeHoldTest.HOST)).isEqualTo(8);
                assertThat(binding.pages().get(JAVA_LONG, PAGE)).as("the private page").isEqualTo(NativeHoldTest.SECRET);
                assertThat(binding.pages().get(JAVA_LONG, 0)).isNotEqualTo(NativeHoldTest.HOST);
            }
            NativeHoldTest.await(() -> !lease.segment().scope().isAlive(), "the held segment to end");
            m.convert(PAGE, PAGE, Attribute.SHARED, Content.PRESERVE);
            try (Lease again = map.lease(PAGE, PAGE)) {
                assertThat(again.segment().get(JAVA_LONG, 0)).isEqualTo(NativeHoldTest.SECRET);
            }
        }
    }

    @Test
    void aLeaseElsewhereInTheHugePageOutlivesTheConversionOfAnotherPage() {
        try (GuestMemory m = file(HUGE); HostMapping map = m.map(0, HUGE)) {
            map.write(PAGE, filled(PAGE, 0x44));
            try (Lease neighbour = map.lease(PAGE + 100, 1)) {
                m.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                assertThat(neighbour.isValid()).isTrue();
                assertThat(neighbour.segment().get(JAVA_BYTE, 0)).as("the lease's page, still shared").isEqualTo((byte) 0x44);
                neighbour.segment().set(JAVA_BYTE, 0, (byte) 0x45);
                assertThat(map.read(PAGE + 100, 1)).containsOnly(0x45);
            }
        }
    }

    @Test
    void aHeldSegmentReachesTheFileAgainOnceAllOfItsHugePageIsShared() throws Exception {
        try (GuestMemory m = file(HUGE); HostMapping map = m.map(0, HUGE)) {
            Lease lease = map.lease(0, PAGE);
            try (NativeHoldTest.BlockedRead read = new NativeHoldTest.BlockedRead(lease.segment())) {
                m.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                m.convert(0, PAGE, Attribute.SHARED, Content.PRESERVE);
                read.release(NativeHoldTest.HOST);
            }
            // The read wrote its bytes through the held segment into the file, shared again.
            assertThat(map.read(0, 8)).isEqualTo(java.nio.ByteBuffer.allocate(8).putLong(0, NativeHoldTest.HOST).array());
        }
    }

    @Test
    void anExhaustedPoolRefusesCleanlyAndLeavesNothingHalfAllocated() {
        try (GuestMemory m = file(3 * HUGE)) {
            m.allocate(0, 3 * HUGE);
            m.punch(HUGE, 2 * HUGE);  // two huge pages and their reservations go back to the pool
            List<PageRun> before = m.pageRuns();
            long available = HugePagePool.of(HUGE).orElseThrow().available();
            // Leave the pool one page: the allocation below gets huge page 1, then fails on 2.
            GuestMemory hog = available <= 1 ? null : file((available - 1) * HUGE);
            try {
                assertThat(HugePagePool.of(HUGE).orElseThrow().available()).isEqualTo(1);
                assertErrno(() -> m.allocate(PAGE, 3 * HUGE - PAGE), "ENOSPC");
                assertThat(m.pageRuns()).as("nothing half allocated").isEqualTo(before);
                assertThat(HugePagePool.of(HUGE).orElseThrow().available()).as("the page taken went back").isEqualTo(1);
                m.allocate(HUGE, HUGE);
                GuestMemoryException e = assertErrno(() -> GuestMemory.create(HUGE, MMAP, Backing.HUGETLB_2M), "ENOMEM");
                assertThat(e.getMessage()).contains("pool");
                assertThat(Backing.HUGETLB_2M.unavailableReason()).hasValueSatisfying(why -> assertThat(why).contains("nr_hugepages"));
                m.punch(HUGE, HUGE);
            } finally {
                if (hog != null) {
                    hog.close();
                }
            }
            m.allocate(HUGE, 2 * HUGE);
            assertThat(m.pageCounts().allocated()).isEqualTo(3 * PAGES_PER_HUGE);
        }
    }

    @Test
    void populatedHugePagesAreTouchedWithoutFaults() throws IOException {
        try (GuestMemory m = file(4 * HUGE); HostMapping map = m.map(0, 4 * HUGE)) {
            m.allocate(0, 4 * HUGE);
            Binding owner = m.bind(new Owner() { }, 0, 4 * HUGE);
            java.lang.foreign.MemorySegment pages = owner.pages();
            long before = minorFaults();
            for (long at = 0; at < 4 * HUGE; at += PAGE) {
                pages.set(JAVA_BYTE, at, (byte) 1);
            }
            long guest = minorFaults() - before;
            before = minorFaults();
            map.access(0, 4 * HUGE, segment -> {
                for (long at = 0; at < 4 * HUGE; at += PAGE) {
                    segment.set(JAVA_BYTE, at, (byte) 2);
                }
            });
            long host = minorFaults() - before;
            // 2048 pages touched each time: 4 KiB pages would fault once each, these not at all
            // (a few faults of the JVM's own are allowed for).
            assertThat(guest).as("minor faults of the owner's first touch").isLessThan(16);
            assertThat(host).as("minor faults of the host's first touch").isLessThan(16);
        }
    }

    /** {@return this thread's minor faults, from {@code /proc/thread-self/stat}} */
    static long minorFaults() throws IOException {
        String stat = Files.readString(Path.of("/proc/thread-self/stat"));
        String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(fields[7]);  // field 10 of the line; the fields after the name start at 3
    }
}
