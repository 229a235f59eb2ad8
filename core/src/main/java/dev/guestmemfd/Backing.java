package dev.guestmemfd;

import dev.guestmemfd.internal.BackingProbe;
import java.util.EnumSet;
import java.util.Optional;
import java.util.Set;

/**
 * Where a guest memory file's pages come from. Every backing gives the same behaviour;
 * they differ in what the kernel knows and what memory it gives back, and in which hosts
 * offer them: ask {@link #isAvailable()} before {@link GuestMemory#create(long, long, Backing)}.
 */
public enum Backing {
    /**
     * A {@code memfd}: any Linux. Punched pages are returned to the system.
     */
    MEMFD,
    /**
     * A {@code memfd_secret}: its pages are gone from the kernel's direct map, so not even the
     * kernel reads them by accident. The kernel cannot punch holes in it: a punched page is
     * zeroed in place and stays allocated until the file is closed.
     */
    SECRET,
    /**
     * The kernel's own guest_memfd, created through {@code /dev/kvm}. Punched pages are
     * returned to the system, and KVM can bind the file to memslots directly. Hosts without
     * {@code /dev/kvm} (most virtual machines without nested virtualization) lack it, and so
     * does every process that runs with the environment variable {@code GMEM_NO_KVM=1}.
     */
    KERNEL,
    /**
     * A {@code memfd} of 2 MiB huge pages from the host's hugetlb pool ({@link HugePagePool}):
     * fewer TLB misses, and population at memory speed. The file's size must be a multiple of
     * 2 MiB; creating it reserves that many pages of the pool ({@code ENOMEM} when the pool
     * cannot hold it). Attributes, offsets and lengths stay 4 KiB granular: punching part of
     * a huge page zeroes those bytes and keeps the page, punching a whole one returns it to
     * the pool (see {@link GuestMemory#punch}). Available while the pool has a free page that
     * no mapping reserved; only root can fill the pool.
     */
    HUGETLB_2M,
    /** As {@link #HUGETLB_2M}, with 1 GiB huge pages: the size must be a multiple of 1 GiB. */
    HUGETLB_1G;

    /**
     * {@return the size of the backing's pages: 4 KiB, or the huge page size} Offsets and
     * lengths are 4 KiB granular on every backing; this is the unit in which memory is taken
     * and returned, and of which a file's size is a multiple.
     */
    public long blockSize() {
        return switch (this) {
            case HUGETLB_2M -> 2L << 20;
            case HUGETLB_1G -> 1L << 30;
            default -> GuestMemory.PAGE_SIZE;
        };
    }

    /** {@return true for the backings whose pages come from the hugetlb pool} */
    public boolean isHugetlb() {
        return this == HUGETLB_2M || this == HUGETLB_1G;
    }

    /**
     * {@return why this host cannot create files on this backing, or empty when it can}
     * The first call makes a one-page file of the kind to find out; the answer is kept. For
     * the hugetlb backings the pool is read again at every call, as root may fill or empty it
     * while the process runs.
     */
    public Optional<String> unavailableReason() {
        return switch (this) {
            case MEMFD -> BackingProbe.memfd();
            case SECRET -> BackingProbe.secret();
            case KERNEL -> BackingProbe.kernel();
            case HUGETLB_2M, HUGETLB_1G -> BackingProbe.hugetlb(blockSize());
        };
    }

    /** {@return true when this host can create files on this backing} */
    public boolean isAvailable() {
        return unavailableReason().isEmpty();
    }

    /** {@return the backings this host offers, in declaration order} */
    public static Set<Backing> available() {
        EnumSet<Backing> offered = EnumSet.noneOf(Backing.class);
        for (Backing b : values()) {
            if (b.isAvailable()) {
                offered.add(b);
            }
        }
        return offered;
    }
}
