/** The {@code gmem} command: what guest_memfd is, and what this library does on this host. */
module dev.guestmemfd.cli {
    requires dev.guestmemfd;
    requires dev.guestmemfd.kvm;
    requires dev.guestmemfd.linux;
    requires info.picocli;
    requires java.xml;

    opens dev.guestmemfd.cli to info.picocli;
}
