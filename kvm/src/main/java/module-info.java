/**
 * A KVM owner for guestmemfd: real virtual machines on {@code /dev/kvm} whose memory is a
 * guest memory file, with guest-requested conversion between shared and private.
 */
module dev.guestmemfd.kvm {
    requires transitive dev.guestmemfd;
    requires dev.guestmemfd.linux;

    exports dev.guestmemfd.kvm;
}
