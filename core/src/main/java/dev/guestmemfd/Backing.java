package dev.guestmemfd;

/**
 * Where a guest memory file's pages come from. Every backing gives the same behaviour;
 * they differ in what the kernel knows and what memory it gives back.
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
     * returned to the system, and KVM can bind the file to memslots directly.
     */
    KERNEL
}
