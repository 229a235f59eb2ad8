/**
 * guestmemfd: the memory of confidential virtual machines as a fixed-size file whose pages
 * are allocated on demand, zeroed before first use, freed by punching holes, and kept
 * either shared (the host may reach them) or private (only the guest and its owner may).
 *
 * <p>The public API is the package {@code dev.guestmemfd}; start at
 * {@link dev.guestmemfd.GuestMemory}.
 */
module dev.guestmemfd {
    requires dev.guestmemfd.linux;
    requires jdk.jfr;

    exports dev.guestmemfd;
    exports dev.guestmemfd.migration;
}
