package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assumptions.assumeThat;

import java.time.Duration;
import java.util.Arrays;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Attacks on the hugetlb backing, punch results, conversion content rules and memory policy,
 * written from the public Javadoc alone: every refusal must carry its errno and leave state
 * and contents as they were.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class AttackTestHugetlb {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final long HUGE = 2L << 20;
    private static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();

    private static GuestMemory huge(long hugePages) {
        assumeThat(Backing.HUGETLB_2M.isAvailable()).as("hugetlb 2M pool").isTrue();
        return GuestMemory.create(hugePages * HUGE, FLAGS, Backing.HUGETLB_2M);
    }

    private static byte[] pattern(int length, int seed) {
        byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) (seed + i * 31 + (i >>> 12));
        }
        return b;
    }

    private static void assertRefused(Runnable call, Errno errno) {
        assertThatThrownBy(call::run).isInstanceOfSatisfying(GuestMemoryException.class,
                e -> assertThat(e.errno()).isEqualTo(errno));
    }

    @Test
    void createRefusesSizesThatAreNotWholeHugePages() {
        assumeThat(Backing.HUGETLB_2M.isAvailable()).isTrue();
        long before = HugePagePool.of(HUGE).orElseThrow().available();
        for (long size : new long[] {0, -HUGE, PAGE, HUGE + PAGE, HUGE - PAGE, Long.MAX_VALUE, Long.MIN_VALUE}) {
            assertRefused(() -> GuestMemory.create(size, FLAGS, Backing.HUGETLB_2M), Errno.EINVAL);
        }
        assertThat(HugePagePool.of(HUGE).orElseThrow().available()).isEqualTo(before);
    }

    @Test
    void createLargerThanThePoolIsEnomemAndReservesNothing() {
        assumeThat(Backing.HUGETLB_2M.isAvailable()).isTrue();
        HugePagePool pool = HugePagePool.of(HUGE).orElseThrow();
        long tooMany = pool.total() + 8;
        assertRefused(() -> GuestMemory.create(tooMany * HUGE, FLAGS, Backing.HUGETLB_2M), Errno.ENOMEM);
        assertThat(HugePagePool.of(HUGE).orElseThrow().available()).isEqualTo(pool.available());
    }

    @Test
    void partialPunchesZeroOnlyTheirBytesAndKeepTheHugePage() {
        try (GuestMemory m = huge(2); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 7);
            map.write(0, data);
            // 4 KiB pieces inside one huge page, and across the boundary between the two.
            PunchResult inside = m.punch(PAGE, 2 * PAGE);
            assertThat(inside).isEqualTo(new PunchResult(0, 2 * PAGE));
            PunchResult across = m.punch(HUGE - PAGE, 2 * PAGE);
            assertThat(across).isEqualTo(new PunchResult(0, 2 * PAGE));
            Arrays.fill(data, (int) PAGE, (int) (3 * PAGE), (byte) 0);
            Arrays.fill(data, (int) (HUGE - PAGE), (int) (HUGE + PAGE), (byte) 0);
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
            assertThat(m.returnsPunchedMemory()).isFalse();
        }
    }

    @Test
    void punchOfOneWholeHugePageAndAPieceSplitsTheResult() {
        try (GuestMemory m = huge(2); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 9);
            map.write(0, data);
            PunchResult r = m.punch(0, HUGE + 3 * PAGE);
            assertThat(r).isEqualTo(new PunchResult(HUGE, 3 * PAGE));
            Arrays.fill(data, 0, (int) (HUGE + 3 * PAGE), (byte) 0);
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
        }
    }

    @Test
    void punchPastTheEndIsClampedAndCountsOnlyTheFile() {
        try (GuestMemory m = huge(1); HostMapping map = m.map(0, m.size())) {
            map.write(0, pattern((int) m.size(), 3));
            PunchResult r = m.punch(HUGE - PAGE, 64 * HUGE);
            assertThat(r.freed() + r.zeroed()).isEqualTo(PAGE);
            assertThat(map.read(HUGE - PAGE, (int) PAGE)).containsOnly(0);
            assertThat(map.read(0, 8)).isEqualTo(Arrays.copyOf(pattern((int) m.size(), 3), 8));
        }
    }

    @Test
    void refusedPunchesChangeNoByte() {
        try (GuestMemory m = huge(1); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 11);
            map.write(0, data);
            assertRefused(() -> m.punch(1, PAGE), Errno.EINVAL);
            assertRefused(() -> m.punch(0, PAGE + 1), Errno.EINVAL);
            assertRefused(() -> m.punch(-PAGE, PAGE), Errno.EINVAL);
            assertRefused(() -> m.punch(0, 0), Errno.EINVAL);
            assertRefused(() -> m.punch(0, -PAGE), Errno.EINVAL);
            assertRefused(() -> m.punch(PAGE, Long.MAX_VALUE), Errno.EFBIG);
            assertRefused(() -> m.punch(Long.MAX_VALUE - PAGE + 1, 2 * PAGE), Errno.EFBIG);
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
        }
    }

    @Test
    void unalignedToHugeButPageAlignedAllocationIsAllowed() {
        try (GuestMemory m = huge(1)) {
            m.allocate(PAGE, PAGE);
            assertRefused(() -> m.allocate(HUGE - PAGE, 2 * PAGE), Errno.EINVAL);
            assertRefused(() -> m.fallocate(0, 0, PAGE), Errno.EOPNOTSUPP);
            assertRefused(() -> m.fallocate(GuestMemory.KEEP_SIZE | 0x100, 0, PAGE), Errno.EOPNOTSUPP);
        }
    }

    @Test
    void pinAcrossTheHugePageBoundaryHoldsBackAConversionWhichChangesNothing() {
        try (GuestMemory m = huge(2); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 13);
            map.write(0, data);
            m.pinWait(Duration.ofMillis(20));
            try (Pin pin = m.pin(HUGE - PAGE, 2 * PAGE)) {
                assertThatThrownBy(() -> m.convert(HUGE - 4 * PAGE, 8 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED))
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                            assertThat(e.errno()).isEqualTo(Errno.EAGAIN);
                            assertThat(e.errorOffset()).isEqualTo(HUGE - PAGE);
                        });
                assertThat(pin.segment().get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0)).isEqualTo(data[(int) (HUGE - PAGE)]);
            }
            for (long at = 0; at < m.size(); at += PAGE) {
                assertThat(m.attribute(at)).isEqualTo(Attribute.SHARED);
            }
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
        }
    }

    @Test
    void leaseAcrossTheBoundaryIsRevokedAndPartialPrivateIsUnreachable() {
        try (GuestMemory m = huge(2); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 17);
            map.write(0, data);
            Lease lease = map.lease(HUGE - 2 * PAGE, 4 * PAGE);
            m.convert(HUGE - PAGE, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            assertThat(lease.isValid()).isFalse();
            assertThatThrownBy(() -> map.read(HUGE - PAGE, 1)).isInstanceOf(HostAccessFault.class);
            // neighbours in the same huge pages stay reachable and intact
            assertThat(map.read(HUGE - 2 * PAGE, (int) PAGE)).isEqualTo(
                    Arrays.copyOfRange(data, (int) (HUGE - 2 * PAGE), (int) (HUGE - PAGE)));
            assertThat(map.read(HUGE + PAGE, (int) PAGE)).isEqualTo(
                    Arrays.copyOfRange(data, (int) (HUGE + PAGE), (int) (HUGE + 2 * PAGE)));
            // a partial punch of a private piece: the piece reads zero once shared again
            PunchResult r = m.punch(HUGE - PAGE, PAGE);
            assertThat(r).isEqualTo(new PunchResult(0, PAGE));
            m.convert(HUGE - PAGE, 2 * PAGE, Attribute.SHARED, Content.PRESERVE);
            assertThat(map.read(HUGE - PAGE, (int) PAGE)).containsOnly(0);
            assertThat(map.read(HUGE, (int) PAGE)).isEqualTo(
                    Arrays.copyOfRange(data, (int) HUGE, (int) (HUGE + PAGE)));
            lease.close();
        }
    }

    @Test
    void zeroTowardsPrivateIsRefusedWithTheRangeStartAndChangesNothing() {
        try (GuestMemory m = huge(1); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 19);
            map.write(0, data);
            assertThatThrownBy(() -> m.convert(3 * PAGE, 5 * PAGE, Attribute.PRIVATE, Content.ZERO))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                        assertThat(e.errno()).isEqualTo(Errno.EOPNOTSUPP);
                        assertThat(e.errorOffset()).isEqualTo(3 * PAGE);
                    });
            assertThat(m.conversions()).isZero();
            assertThat(m.attribute(3 * PAGE)).isEqualTo(Attribute.SHARED);
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
        }
    }

    @Test
    void zeroTowardsSharedZeroesPagesThatWereSharedAlready() {
        try (GuestMemory m = huge(1); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 23);
            map.write(0, data);
            m.convert(PAGE, 2 * PAGE, Attribute.SHARED, Content.ZERO);
            Arrays.fill(data, (int) PAGE, (int) (3 * PAGE), (byte) 0);
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
        }
    }

    @Test
    void conversionRangeRefusalsCarryNoErrorOffset() {
        try (GuestMemory m = huge(1)) {
            long[][] bad = {{1, PAGE}, {0, PAGE - 1}, {0, 0}, {-PAGE, PAGE}, {0, -PAGE}, {PAGE, Long.MAX_VALUE},
                    {Long.MAX_VALUE - PAGE + 1, PAGE}, {m.size(), PAGE}, {m.size() - PAGE, 2 * PAGE},
                    {Long.MIN_VALUE, PAGE}};
            for (long[] r : bad) {
                assertThatThrownBy(() -> m.convert(r[0], r[1], Attribute.PRIVATE, Content.UNSPECIFIED))
                        .as("convert(%d, %d)", r[0], r[1])
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                            assertThat(e.errno()).isEqualTo(Errno.EINVAL);
                            assertThat(e.errorOffset()).isEqualTo(-1);
                        });
            }
            assertThat(m.conversions()).isZero();
            assertThatThrownBy(() -> m.convert(0, PAGE, null, Content.UNSPECIFIED)).isInstanceOf(NullPointerException.class);
            assertThatThrownBy(() -> m.convert(0, PAGE, Attribute.PRIVATE, null)).isInstanceOf(NullPointerException.class);
            assertThat(m.attribute(0)).isEqualTo(Attribute.SHARED);
        }
    }

    @Test
    void ownerRefusingAContentModeIsEopnotsuppEvenWhenNoPageChanges() {
        try (GuestMemory m = huge(1)) {
            Owner noPreserve = new Owner() {
                @Override
                public boolean supportsContent(Binding binding, Attribute target, Content content) {
                    return content != Content.PRESERVE;
                }
            };
            try (Binding b = m.bind(noPreserve, HUGE / 2, HUGE / 2)) {
                // pages already shared: the mode still applies to the whole range
                assertThatThrownBy(() -> m.convert(0, HUGE, Attribute.SHARED, Content.PRESERVE))
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                            assertThat(e.errno()).isEqualTo(Errno.EOPNOTSUPP);
                            assertThat(e.errorOffset()).isEqualTo(0);
                        });
                // a range that misses the binding is not the owner's to refuse
                m.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                assertThat(m.attribute(0)).isEqualTo(Attribute.PRIVATE);
                assertThat(b.isClosed()).isFalse();
            }
        }
    }

    @Test
    void policyOnHugetlbIsRefusedBeforeAnythingChanges() {
        // docs/SEMANTICS.md: MEMFD "is the only backing where setPolicy is accepted"; hugetlbfs
        // keeps no shared policy per file range, so the kernel would apply it to one mapping.
        try (GuestMemory m = huge(2); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 37);
            map.write(0, data);
            assertRefused(() -> m.setPolicy(HUGE, HUGE, new MemoryPolicy.Bind(Set.of(0))), Errno.EOPNOTSUPP);
            assertRefused(() -> m.setPolicy(PAGE, PAGE, new MemoryPolicy.Preferred(0)), Errno.EOPNOTSUPP);
            assertThat(m.policy(HUGE)).isEqualTo(MemoryPolicy.DEFAULT);
            assertThat(m.policy(PAGE)).isEqualTo(MemoryPolicy.DEFAULT);
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
            assertRefused(() -> m.policy(m.size()), Errno.EINVAL);
            assertRefused(() -> m.policy(-1), Errno.EINVAL);
        }
    }

    @Test
    void policyRefusalsOnMemfdChangeNothing() {
        try (GuestMemory m = GuestMemory.create(64 * PAGE, FLAGS, Backing.MEMFD)) {
            MemoryPolicy bind0 = new MemoryPolicy.Bind(Set.of(0));
            m.setPolicy(32 * PAGE, 32 * PAGE, bind0);
            assertThat(m.policy(32 * PAGE)).isEqualTo(bind0);
            assertThat(m.policy(0)).isEqualTo(MemoryPolicy.DEFAULT);
            long at = 32 * PAGE;
            long len = 32 * PAGE;
            assertRefused(() -> m.setPolicy(at, len, new MemoryPolicy.Bind(Set.of())), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at, len, new MemoryPolicy.Bind(Set.of(1023))), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at, len, new MemoryPolicy.Bind(Set.of(1024))), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at, len, new MemoryPolicy.Interleave(Set.of(0, 4000))), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at, len, new MemoryPolicy.Interleave(Set.of(0, -1))), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at, len, new MemoryPolicy.Preferred(-1)), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at, len, new MemoryPolicy.Preferred(Integer.MAX_VALUE)), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at, len, new MemoryPolicy.Preferred(Integer.MIN_VALUE)), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at + 1, PAGE, MemoryPolicy.DEFAULT), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(at, PAGE + 1, MemoryPolicy.DEFAULT), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(0, 0, MemoryPolicy.DEFAULT), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(-PAGE, PAGE, MemoryPolicy.DEFAULT), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(PAGE, Long.MAX_VALUE - PAGE + 1, MemoryPolicy.DEFAULT), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(Long.MAX_VALUE - PAGE + 1, PAGE, MemoryPolicy.DEFAULT), Errno.EINVAL);
            assertRefused(() -> m.setPolicy(m.size() - PAGE, 2 * PAGE, MemoryPolicy.DEFAULT), Errno.EINVAL);
            assertThatThrownBy(() -> m.setPolicy(0, PAGE, null)).isInstanceOf(NullPointerException.class);
            for (long p = 0; p < 64; p++) {
                assertThat(m.policy(p * PAGE)).isEqualTo(p < 32 ? MemoryPolicy.DEFAULT : bind0);
            }
            assertRefused(() -> m.policy(m.size()), Errno.EINVAL);
            assertRefused(() -> m.policy(Long.MIN_VALUE), Errno.EINVAL);
            // the policy belongs to the range: it stays across punch and refill
            m.allocate(at, len);
            m.punchHole(at, len);
            m.allocate(at, len);
            assertThat(m.policy(at + PAGE)).isEqualTo(bind0);
            // a piece in the middle of the bound range goes back to default, the rest keeps it
            m.setPolicy(40 * PAGE, PAGE, MemoryPolicy.DEFAULT);
            assertThat(m.policy(40 * PAGE)).isEqualTo(MemoryPolicy.DEFAULT);
            assertThat(m.policy(39 * PAGE)).isEqualTo(bind0);
            assertThat(m.policy(41 * PAGE)).isEqualTo(bind0);
        }
    }

    @Test
    void policyNodeSetsRefuseNulls() {
        assertThatThrownBy(() -> new MemoryPolicy.Bind(null)).isInstanceOf(NullPointerException.class);
        assertThatThrownBy(() -> new MemoryPolicy.Interleave(null)).isInstanceOf(NullPointerException.class);
        java.util.Set<Integer> withNull = new java.util.HashSet<>();
        withNull.add(null);
        assertThatThrownBy(() -> new MemoryPolicy.Bind(withNull)).isInstanceOf(NullPointerException.class);
    }

    @Test
    void closedFileRefusesTheNewCallsWithEbadf() {
        GuestMemory m = huge(1);
        m.allocate(0, PAGE);
        m.close();
        assertRefused(() -> m.punch(0, PAGE), Errno.EBADF);
        assertRefused(() -> m.setPolicy(0, PAGE, MemoryPolicy.DEFAULT), Errno.EBADF);
        assertRefused(() -> m.policy(0), Errno.EBADF);
        assertRefused(() -> m.reportMemoryFailure(0), Errno.EBADF);
        assertRefused(() -> m.isPoisoned(0), Errno.EBADF);
        assertRefused(m::poisonedPages, Errno.EBADF);
        assertRefused(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE), Errno.EBADF);
    }

    @Test
    void closeWhileAConversionWaitsForAPinEndsItWithEbadf() throws Exception {
        GuestMemory m = huge(1);
        m.pinWait(Duration.ofSeconds(30));
        Pin pin = m.pin(HUGE - PAGE, PAGE);
        CompletableFuture<Void> conversion = CompletableFuture.runAsync(
                () -> m.convert(0, HUGE, Attribute.PRIVATE, Content.PRESERVE));
        // let the conversion reach its wait; either order must end in EBADF or success-free close
        Thread.sleep(200);
        m.close();
        assertThatThrownBy(() -> conversion.get(20, TimeUnit.SECONDS))
                .cause().isInstanceOfSatisfying(GuestMemoryException.class,
                        e -> assertThat(e.errno()).isEqualTo(Errno.EBADF));
        pin.close();
        assertThat(m.isClosed()).isTrue();
    }

    @Test
    void poisonOfOnePieceLeavesALeaseElsewhereInTheHugePageWorking() {
        try (GuestMemory m = huge(1); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 41);
            map.write(0, data);
            try (Lease elsewhere = map.lease(0, 2 * PAGE); Lease over = map.lease(4 * PAGE, 2 * PAGE)) {
                assertThat(m.reportMemoryFailure(5 * PAGE)).isTrue();
                assertThat(over.isValid()).isFalse();
                assertThat(elsewhere.isValid()).isTrue();
                assertThat(elsewhere.segment().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE))
                        .isEqualTo(Arrays.copyOf(data, (int) (2 * PAGE)));
                elsewhere.segment().set(java.lang.foreign.ValueLayout.JAVA_BYTE, 0, (byte) 0x77);
                assertThat(map.read(0, 1)).containsExactly(0x77);
                // a conversion over the poisoned piece is refused, one beside it is not
                assertThatThrownBy(() -> m.convert(4 * PAGE, 4 * PAGE, Attribute.PRIVATE, Content.PRESERVE))
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                            assertThat(e.errno()).isEqualTo(Errno.EHWPOISON);
                            assertThat(e.errorOffset()).isEqualTo(5 * PAGE);
                        });
                m.convert(6 * PAGE, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
                assertThat(elsewhere.isValid()).isTrue();
                assertThat(map.read(PAGE, 8)).isEqualTo(Arrays.copyOfRange(data, (int) PAGE, (int) PAGE + 8));
            }
        }
    }

    @Test
    void zeroTowardsSharedAcrossTheBoundaryWithPrivatePagesAndAPinElsewhere() {
        try (GuestMemory m = huge(2); Binding owner = m.bind(new Owner() { }, 0, 2 * HUGE);
                HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 43);
            map.write(0, data);
            m.convert(HUGE - 2 * PAGE, 4 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            try (Pin pin = m.pin(0, PAGE)) {
                m.convert(HUGE - 4 * PAGE, 8 * PAGE, Attribute.SHARED, Content.ZERO);
                assertThat(pin.segment().get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0)).isEqualTo(data[0]);
            }
            Arrays.fill(data, (int) (HUGE - 4 * PAGE), (int) (HUGE + 4 * PAGE), (byte) 0);
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
            assertThat(owner.pages().asSlice(HUGE - 2 * PAGE, 4 * PAGE).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE))
                    .containsOnly(0);
        }
    }

    @Test
    void aPinOnOneSideOfTheBoundaryRefusesAConversionOfBothWholeAndTheOtherSideStaysShared() {
        try (GuestMemory m = huge(2); HostMapping map = m.map(0, m.size())) {
            byte[] data = pattern((int) m.size(), 47);
            map.write(0, data);
            m.pinWait(Duration.ZERO);
            try (Pin pin = m.pin(HUGE + 3 * PAGE, PAGE)) {
                assertThat(pin.length()).isEqualTo(PAGE);
                assertThatThrownBy(() -> m.convert(0, 2 * HUGE, Attribute.PRIVATE, Content.UNSPECIFIED))
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                            assertThat(e.errno()).isEqualTo(Errno.EAGAIN);
                            assertThat(e.errorOffset()).isEqualTo(HUGE + 3 * PAGE);
                        });
            }
            assertThat(m.pageCounts().privates()).isZero();
            assertThat(map.read(0, (int) m.size())).isEqualTo(data);
            m.convert(0, 2 * HUGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            assertThat(m.pageCounts().privates()).isEqualTo(2 * HUGE / PAGE);
        }
    }
}
