package dev.guestmemfd.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** Reading NUMA nodes from a sysfs tree: this host's, and made-up ones with what real hosts have. */
@Timeout(30)
class NumaNodeTest {
    @Test
    void readsEveryNodeByNumberWithItsCpusAndMemory(@TempDir Path sys) throws IOException {
        node(sys, 10, "4-7", "Node 10 MemTotal:        2048 kB\nNode 10 MemFree:         1024 kB\n");
        node(sys, 2, "0-3,8", "Node 2 MemTotal:       4194304 kB\nNode 2 MemFree:        1048576 kB\nNode 2 MemUsed: 3 kB\n");
        node(sys, 3, "", "Node 3 MemTotal:              0 kB\n");  // a CPU-less, memory-less node
        Files.writeString(sys.resolve("online"), "2-3,10\n");  // not a node directory
        Files.createDirectories(sys.resolve("power"));

        assertThat(NumaNode.read(sys)).containsExactly(
                new NumaNode(2, "0-3,8", 4L << 30, 1L << 30),
                new NumaNode(3, "", 0, 0),
                new NumaNode(10, "4-7", 2L << 20, 1L << 20));
        assertThat(NumaNode.read(sys).get(1).hasMemory()).isFalse();
    }

    @Test
    void aHostWithoutTheDirectoryHasNoNodesAndAMissingFileReadsEmpty(@TempDir Path sys) throws IOException {
        assertThat(NumaNode.read(sys.resolve("absent"))).isEmpty();
        Files.createDirectories(sys.resolve("node0"));
        assertThat(NumaNode.read(sys)).containsExactly(new NumaNode(0, "", 0, 0));
    }

    @Test
    void thisHostHasANodeWithMemoryWhereSysfsListsNodes() {
        if (Files.isDirectory(NumaNode.SYSFS)) {
            assertThat(NumaNode.read(NumaNode.SYSFS)).isNotEmpty().anySatisfy(n -> assertThat(n.hasMemory()).isTrue());
        }
    }

    @Test
    void sizesAreShownToATenth() {
        assertThat(NumaNode.approx(13_068_064L * 1024)).isEqualTo("12.5 GiB");
        assertThat(NumaNode.approx(3L << 19)).isEqualTo("1.5 MiB");
        assertThat(NumaNode.approx(0)).isEqualTo("0.0 MiB");
    }

    private static void node(Path sys, int n, String cpus, String meminfo) throws IOException {
        Path dir = Files.createDirectories(sys.resolve("node" + n));
        Files.writeString(dir.resolve("cpulist"), cpus + "\n");
        Files.writeString(dir.resolve("meminfo"), meminfo);
    }
}
