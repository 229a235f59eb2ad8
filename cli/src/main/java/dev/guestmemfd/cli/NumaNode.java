package dev.guestmemfd.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * A NUMA node of this host as sysfs shows it ({@code /sys/devices/system/node/nodeN}): the
 * nodes a {@code MemoryPolicy} may name are those with memory.
 *
 * @param node        the node's number
 * @param cpus        its CPUs, in the kernel's list form ({@code 0-3,8}); empty for none
 * @param memoryBytes its memory ({@code MemTotal}), 0 for a node without
 * @param freeBytes   its free memory ({@code MemFree}) when read
 */
record NumaNode(int node, String cpus, long memoryBytes, long freeBytes) {
    /** Where the kernel lists the nodes. */
    static final Path SYSFS = Path.of("/sys/devices/system/node");
    private static final Pattern NODE_DIR = Pattern.compile("node(\\d+)");

    /** {@return the nodes under {@code root}, by number; empty where there is no such directory (no NUMA support)} */
    static List<NumaNode> read(Path root) {
        List<NumaNode> nodes = new ArrayList<>();
        try (Stream<Path> dirs = Files.list(root)) {
            for (Path dir : dirs.toList()) {
                Matcher m = NODE_DIR.matcher(dir.getFileName().toString());
                if (m.matches() && Files.isDirectory(dir)) {
                    String meminfo = readOr(dir.resolve("meminfo"), "");
                    nodes.add(new NumaNode(Integer.parseInt(m.group(1)), readOr(dir.resolve("cpulist"), "").trim(),
                            kib(meminfo, "MemTotal") * 1024, kib(meminfo, "MemFree") * 1024));
                }
            }
        } catch (IOException e) {
            return List.of();
        }
        nodes.sort(Comparator.comparingInt(NumaNode::node));
        return nodes;
    }

    /** {@return whether the node has memory: a policy may name it} */
    boolean hasMemory() {
        return memoryBytes > 0;
    }

    /** {@return {@code bytes} to a tenth of a GiB, or of a MiB below one GiB} */
    static String approx(long bytes) {
        return bytes >= 1L << 30 ? String.format(java.util.Locale.ROOT, "%.1f GiB", bytes / (double) (1L << 30))
                : String.format(java.util.Locale.ROOT, "%.1f MiB", bytes / (double) (1L << 20));
    }

    private static String readOr(Path file, String otherwise) {
        try {
            return Files.readString(file);
        } catch (IOException e) {
            return otherwise;
        }
    }

    /** {@return the kB value of {@code field} in a node's meminfo ("Node 0 MemTotal:  123 kB"), 0 when absent} */
    private static long kib(String meminfo, String field) {
        Matcher m = Pattern.compile("^Node \\d+ " + field + ":\\s+(\\d+) kB", Pattern.MULTILINE).matcher(meminfo);
        return m.find() ? Long.parseLong(m.group(1)) : 0;
    }
}
