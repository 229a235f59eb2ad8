package dev.guestmemfd.kvm;

/**
 * What this host's KVM offers to guest memory management.
 *
 * @param apiVersion        {@code KVM_GET_API_VERSION} (12 on every current kernel)
 * @param guestMemfd        {@code KVM_CAP_GUEST_MEMFD}
 * @param guestMemfdFlags   {@code KVM_CAP_GUEST_MEMFD_FLAGS}: bit 0 MMAP, bit 1 INIT_SHARED
 * @param vmTypes           {@code KVM_CAP_VM_TYPES}: bit n set when VM type n exists
 * @param memoryAttributes  {@code KVM_CAP_MEMORY_ATTRIBUTES}: attributes the kernel can keep
 *                          per page (bit 3: PRIVATE); 0 when the kernel keeps none
 * @param userMemory2       {@code KVM_CAP_USER_MEMORY2}
 * @param exitHypercall     {@code KVM_CAP_EXIT_HYPERCALL}: hypercalls that may exit to user space
 */
public record Capabilities(int apiVersion, boolean guestMemfd, long guestMemfdFlags, long vmTypes,
                           long memoryAttributes, boolean userMemory2, long exitHypercall) {
    /** {@return true when the kernel itself can keep pages private for the default VM type} */
    public boolean kernelPrivateMemory() {
        return (memoryAttributes & dev.guestmemfd.linux.KvmUapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) != 0;
    }
}
