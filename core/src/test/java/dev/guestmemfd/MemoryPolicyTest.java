package dev.guestmemfd;

import static dev.guestmemfd.Errors.assertErrno;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.testing.RequiresBacking;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * {@link GuestMemory#setPolicy} and {@link GuestMemory#policy}: the round trip through the
 * kernel on the nodes this host has, and the refusals that change nothing.
 */
@Timeout(60)
class MemoryPolicyTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long SIZE = 16 * PAGE;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();

    /** {@return this host's nodes with memory, from sysfs, read independently of the library} */
    static List<Integer> hostNodes() throws Exception {
        List<Integer> nodes = new ArrayList<>();
        Path list = Path.of("/sys/devices/system/node/has_memory");
        if (!Files.exists(list)) {
            return List.of(0);
        }
        for (String part : Files.readString(list).strip().split(",")) {
            String[] ends = part.split("-");
            for (int n = Integer.parseInt(ends[0]); n <= Integer.parseInt(ends[ends.length - 1]); n++) {
                nodes.add(n);
            }
        }
        return nodes;
    }

    static List<MemoryPolicy> policiesOn(int node, Set<Integer> all) {
        return List.of(new MemoryPolicy.Bind(Set.of(node)), new MemoryPolicy.Preferred(node),
                new MemoryPolicy.Interleave(all), new MemoryPolicy.Bind(all));
    }

    static List<MemoryPolicy> policiesOfEachPage(GuestMemory m) {
        List<MemoryPolicy> all = new ArrayList<>();
        for (long at = 0; at < m.size(); at += PAGE) {
            all.add(m.policy(at));
        }
        return all;
    }

    @Test
    void aPolicyReadsBackPageByPageAndOnlyOverItsRange() throws Exception {
        int node = hostNodes().getFirst();
        try (GuestMemory m = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD)) {
            assertThat(m.policy(0)).isEqualTo(MemoryPolicy.DEFAULT);
            for (MemoryPolicy policy : policiesOn(node, new HashSet<>(hostNodes()))) {
                m.setPolicy(4 * PAGE, 4 * PAGE, policy);
                assertThat(m.policy(4 * PAGE)).isEqualTo(policy);
                assertThat(m.policy(8 * PAGE - 1)).as("any byte of the page").isEqualTo(policy);
                assertThat(m.policy(3 * PAGE)).isEqualTo(MemoryPolicy.DEFAULT);
                assertThat(m.policy(8 * PAGE)).isEqualTo(MemoryPolicy.DEFAULT);
            }
            m.setPolicy(5 * PAGE, PAGE, MemoryPolicy.DEFAULT);
            assertThat(m.policy(5 * PAGE)).isEqualTo(MemoryPolicy.DEFAULT);
            assertThat(m.policy(6 * PAGE)).isEqualTo(new MemoryPolicy.Bind(new HashSet<>(hostNodes())));
        }
    }

    @Test
    void thePolicyIsTheFilesAllocationAndPopulateHonourItAndItOutlivesPunchAndRefill() throws Exception {
        int node = hostNodes().getFirst();
        MemoryPolicy bind = new MemoryPolicy.Bind(Set.of(node));
        try (GuestMemory m = GuestMemory.create(SIZE, Flag.MMAP.bit(), Backing.MEMFD)) {
            m.setPolicy(0, SIZE, bind);
            m.allocate(0, SIZE);
            Binding owner = m.bind(new Owner() { }, 0, SIZE);
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment image = arena.allocate(2 * PAGE);
                image.fill((byte) 7);
                owner.populate(2 * PAGE, image, null);
            }
            m.punchHole(0, SIZE);
            assertThat(policiesOfEachPage(m)).containsOnly(bind);
            m.allocate(0, SIZE);
            m.convert(0, SIZE, Attribute.SHARED, Content.ZERO);
            try (HostMapping host = m.map(0, SIZE)) {
                host.write(0, new byte[] {1});
            }
            assertThat(policiesOfEachPage(m)).containsOnly(bind);
            // Every page is on the bound node (the kernel's own placement report, per page).
            assertThat(numaMapsNodes()).as("nodes of the file's pages in /proc/self/numa_maps").containsOnly(node);
        }
    }

    /** {@return the nodes that /proc/self/numa_maps shows pages of memfd files on} */
    static Set<Integer> numaMapsNodes() throws Exception {
        Set<Integer> nodes = new HashSet<>();
        for (String line : Files.readAllLines(Path.of("/proc/self/numa_maps"))) {
            if (!line.contains("file=/memfd:guestmemfd")) {
                continue;
            }
            for (String field : line.split(" ")) {
                if (field.matches("N\\d+=\\d+")) {
                    nodes.add(Integer.parseInt(field.substring(1, field.indexOf('='))));
                }
            }
        }
        return nodes;
    }

    @Test
    void badPoliciesAndRangesAreRefusedWithEinvalAndChangeNothing() throws Exception {
        int node = hostNodes().getFirst();
        int absent = hostNodes().getLast() + 1;
        MemoryPolicy kept = new MemoryPolicy.Preferred(node);
        GuestMemory m = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
        try {
            m.setPolicy(0, SIZE, kept);
            List<MemoryPolicy> before = policiesOfEachPage(m);
            List<MemoryPolicy> bad = List.of(new MemoryPolicy.Bind(Set.of()), new MemoryPolicy.Interleave(Set.of()),
                    new MemoryPolicy.Bind(Set.of(absent)), new MemoryPolicy.Bind(Set.of(node, absent)),
                    new MemoryPolicy.Preferred(absent), new MemoryPolicy.Preferred(-1),
                    new MemoryPolicy.Interleave(Set.of(-5, node)), new MemoryPolicy.Bind(Set.of(Integer.MAX_VALUE)),
                    new MemoryPolicy.Preferred(Integer.MIN_VALUE), new MemoryPolicy.Bind(Set.of(1024)));
            for (MemoryPolicy policy : bad) {
                assertErrno(() -> m.setPolicy(0, SIZE, policy), "EINVAL");
            }
            long[][] ranges = {{1, PAGE}, {0, PAGE + 1}, {0, 0}, {-PAGE, PAGE}, {0, -PAGE}, {SIZE, PAGE}, {0, SIZE + PAGE},
                    {PAGE, Long.MAX_VALUE - PAGE + 1}, {Long.MAX_VALUE - PAGE + 1, PAGE}, {SIZE - PAGE, 2 * PAGE}};
            for (long[] r : ranges) {
                assertErrno(() -> m.setPolicy(r[0], r[1], MemoryPolicy.DEFAULT), "EINVAL");
            }
            assertThat(policiesOfEachPage(m)).isEqualTo(before);
            assertErrno(() -> m.policy(SIZE), "EINVAL");
            assertErrno(() -> m.policy(-1), "EINVAL");
            assertThatThrownBy(() -> m.setPolicy(0, SIZE, null)).isInstanceOf(NullPointerException.class).hasMessageContaining("policy");
            assertThatThrownBy(() -> new MemoryPolicy.Bind(null)).isInstanceOf(NullPointerException.class).hasMessageContaining("nodes");
            m.close();
            assertErrno(() -> m.setPolicy(0, SIZE, kept), "EBADF");
            assertErrno(() -> m.policy(0), "EBADF");
        } finally {
            m.close();
        }
    }

    @ParameterizedTest
    @EnumSource(value = Backing.class, names = {"SECRET", "KERNEL"})
    @RequiresBacking
    void backingsWhoseKernelKeepsNoFilePolicyRefuseWithEopnotsupp(Backing backing) throws Exception {
        long flags = FLAGS | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
        try (GuestMemory m = GuestMemory.create(SIZE, flags, backing)) {
            assertErrno(() -> m.setPolicy(0, SIZE, new MemoryPolicy.Bind(Set.of(hostNodes().getFirst()))), "EOPNOTSUPP");
            assertErrno(() -> m.setPolicy(0, SIZE, new MemoryPolicy.Bind(Set.of())), "EINVAL");  // arguments first
            assertThat(m.policy(0)).isEqualTo(MemoryPolicy.DEFAULT);
        }
    }

    @Test
    void nodeSetsAreValuesInOrder() {
        assertThat(new MemoryPolicy.Interleave(Set.of(3, 1, 2)).nodeSet()).containsExactly(1, 2, 3);
        assertThat(new MemoryPolicy.Bind(Set.of(2, 1))).isEqualTo(new MemoryPolicy.Bind(Set.of(1, 2)));
        assertThat(MemoryPolicy.DEFAULT.nodeSet()).isEmpty();
        assertThat(new MemoryPolicy.Preferred(4).nodeSet()).containsExactly(4);
    }
}
