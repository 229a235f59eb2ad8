package dev.guestmemfd;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * The host's pool of huge pages of one size, as {@code /sys/kernel/mm/hugepages} shows it at
 * the moment of the call. The {@link Backing#HUGETLB_2M} and {@link Backing#HUGETLB_1G}
 * backings take their pages from it; only root can grow it (for 2 MiB pages,
 * {@code echo N > /proc/sys/vm/nr_hugepages}).
 *
 * @param pageSize bytes in one huge page
 * @param total    huge pages in the pool ({@code nr_hugepages})
 * @param free     pages not in use, reserved ones included ({@code free_hugepages})
 * @param reserved free pages promised to mappings that have not touched them yet ({@code resv_hugepages})
 * @param surplus  pages allocated beyond {@code total} ({@code surplus_hugepages})
 */
public record HugePagePool(long pageSize, long total, long free, long reserved, long surplus) {
    private static final Path ROOT = Path.of("/sys/kernel/mm/hugepages");

    /** {@return the free pages that no mapping has reserved: what a new file can take} */
    public long available() {
        return Math.max(0, free - reserved);
    }

    /** {@return the directory of the pool of {@code pageSize}-byte pages} */
    static Path directory(long pageSize) {
        return ROOT.resolve("hugepages-" + pageSize / 1024 + "kB");
    }

    /** {@return the pool of {@code pageSize}-byte pages, or empty when the host has none of that size} */
    public static Optional<HugePagePool> of(long pageSize) {
        if (pageSize <= 0 || pageSize % 1024 != 0) {
            return Optional.empty();  // pools are named in whole kibibytes: no other size has one
        }
        Path dir = directory(pageSize);
        try {
            return Optional.of(new HugePagePool(pageSize, read(dir, "nr_hugepages"), read(dir, "free_hugepages"),
                    read(dir, "resv_hugepages"), read(dir, "surplus_hugepages")));
        } catch (IOException | NumberFormatException e) {
            return Optional.empty();
        }
    }

    /** {@return every huge page pool of this host, smallest page size first} */
    public static List<HugePagePool> all() {
        List<HugePagePool> pools = new ArrayList<>();
        try (var dirs = Files.list(ROOT)) {
            for (Path dir : dirs.toList()) {
                String name = dir.getFileName().toString();
                if (name.startsWith("hugepages-") && name.endsWith("kB")) {
                    long kb = Long.parseLong(name.substring("hugepages-".length(), name.length() - 2));
                    of(kb * 1024).ifPresent(pools::add);
                }
            }
        } catch (IOException | NumberFormatException e) {
            return List.of();  // no hugetlb in this kernel
        }
        pools.sort(java.util.Comparator.comparingLong(HugePagePool::pageSize));
        return pools;
    }

    private static long read(Path dir, String file) throws IOException {
        return Long.parseLong(Files.readString(dir.resolve(file)).trim());
    }
}
