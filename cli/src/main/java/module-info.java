/** The {@code gmem} command: what guest_memfd is, and what this library does on this host. */
@SuppressWarnings("requires-automatic") // HdrHistogram has no module name of its own
module dev.guestmemfd.cli {
    requires dev.guestmemfd;
    requires dev.guestmemfd.kvm;
    requires dev.guestmemfd.models;
    requires info.picocli;
    requires java.xml;
    requires HdrHistogram;

    opens dev.guestmemfd.cli to info.picocli;
}
