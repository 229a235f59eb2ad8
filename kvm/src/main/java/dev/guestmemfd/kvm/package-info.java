/**
 * KVM as an owner of guest memory: {@link dev.guestmemfd.kvm.Kvm} opens {@code /dev/kvm},
 * a {@link dev.guestmemfd.kvm.Vm} binds guest memory files into memslots (over a memfd, or the
 * kernel's own guest_memfd), {@link dev.guestmemfd.kvm.Vcpu}s run real guest code, and the
 * guests ask for conversions between shared and private through the library.
 * {@link dev.guestmemfd.kvm.Machine} puts it together around the bundled
 * {@link dev.guestmemfd.kvm.GuestProgram}s; {@link dev.guestmemfd.kvm.Migration} moves a
 * running guest to another process.
 *
 * <p>Many hosts have no {@code /dev/kvm} (most virtual machines without nested
 * virtualization): ask {@link dev.guestmemfd.kvm.Kvm#available()} first, and
 * {@link dev.guestmemfd.kvm.Kvm#unavailableReason()} says what is missing. A guest that
 * prints a line and keeps its code private, or the reason it cannot run here:
 * {@snippet class=dev.guestmemfd.kvm.KvmExampleTest region=example}
 */
package dev.guestmemfd.kvm;
