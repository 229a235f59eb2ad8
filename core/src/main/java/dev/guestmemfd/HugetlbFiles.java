package dev.guestmemfd;

import dev.guestmemfd.internal.BackingFile;
import dev.guestmemfd.internal.BackingProbe;
import dev.guestmemfd.linux.LinuxException;

/** Creates the files of the hugetlb backings, with the host's reason when it cannot. */
final class HugetlbFiles {
    private HugetlbFiles() {
    }

    /**
     * {@return a hugetlb file of {@code size} bytes, all of it reserved in the pool}
     *
     * @throws LinuxException {@code ENODEV} with the reason when the host has no such pool or
     *                        its kernel no hugetlbfs; {@code ENOMEM} when the pool cannot hold
     *                        the file (nothing is left behind)
     */
    static BackingFile create(long size, Backing backing) {
        var missing = BackingProbe.hugetlb(backing.blockSize());
        var pool = HugePagePool.of(backing.blockSize());
        if (missing.isPresent() && (pool.isEmpty() || pool.get().total() == 0)) {
            throw new LinuxException(dev.guestmemfd.linux.Errno.ENODEV.number(), "the " + backing + " backing: " + missing.get());
        }
        try {
            return new BackingFile.Hugetlb(size, backing.blockSize());
        } catch (LinuxException e) {
            if (e.is(dev.guestmemfd.linux.Errno.ENOMEM)) {
                throw new LinuxException(e.errno(), "the " + backing + " pool cannot hold " + size / backing.blockSize()
                        + " more huge pages (" + pool.map(p -> p.available() + " available").orElse("no pool") + "): " + e.getMessage());
            }
            throw e;
        }
    }
}
