package dev.guestmemfd.kvm;

import dev.guestmemfd.Binding;

/**
 * A memslot: a guest-physical range of a VM backed by a range of a guest memory file,
 * through a {@link Binding} whose owner is the VM. Closing it deletes the slot and unbinds.
 *
 * @param slot          the slot id
 * @param guestPhysical the guest-physical base address
 * @param binding       the file range, which the VM owns
 * @param guestMemfd    true when KVM reads the file itself ({@code KVM_MEM_GUEST_MEMFD}),
 *                      false when it goes through the library's mapping of it
 */
public record Memslot(int slot, long guestPhysical, Binding binding, boolean guestMemfd) implements AutoCloseable {
    /** {@return the size in bytes} */
    public long size() {
        return binding.length();
    }

    /** {@return the guest-physical address of file offset {@code fileOffset}} */
    public long guestPhysicalOf(long fileOffset) {
        return guestPhysical + (fileOffset - binding.offset());
    }

    /** {@return true when the slot covers {@code gpa}} */
    public boolean covers(long gpa) {
        return gpa >= guestPhysical && gpa - guestPhysical < size();
    }

    /** Deletes the slot and unbinds the file range. Idempotent. */
    @Override
    public void close() {
        binding.close();
    }
}
