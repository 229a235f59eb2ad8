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
    KERNEL;

    /**
     * {@return why this host cannot create files on this backing, or empty when it can}
     * The first call makes a one-page file of the kind to find out; the answer is kept.
     */
    public Optional<String> unavailableReason() {
        return switch (this) {
            case MEMFD -> BackingProbe.memfd();
            case SECRET -> BackingProbe.secret();
            case KERNEL -> BackingProbe.kernel();
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
