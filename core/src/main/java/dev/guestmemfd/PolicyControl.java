package dev.guestmemfd;

import dev.guestmemfd.internal.BackingFile;
import dev.guestmemfd.linux.Mempolicy;

/**
 * The NUMA placement of a file's pages: a {@link MemoryPolicy} checked against the host's
 * nodes and the file's backing, then set and read per range of the file through the kernel.
 *
 * <p>Beside {@link KernelPolicy} rather than in the internal package, which knows none of the
 * public types.
 *
 * @implSpec Not thread safe: the file calls {@link #set} and {@link #get} under its lock;
 * {@link #check} needs none.
 */
final class PolicyControl {
    private final BackingFile file;
    private final Backing backing;

    PolicyControl(BackingFile file, Backing backing) {
        this.file = file;
        this.backing = backing;
    }

    /**
     * {@return {@code policy} in the kernel's words, once it is known to be one this host and
     * backing can keep}
     *
     * @throws GuestMemoryException {@code EINVAL} for an empty node set or a node this host
     *                              has no memory on; {@code EOPNOTSUPP} on a backing whose
     *                              kernel keeps no policy per range of the file
     */
    KernelPolicy check(String op, MemoryPolicy policy) {
        java.util.BitSet hostNodes = Mempolicy.memoryNodes();
        if (!(policy instanceof MemoryPolicy.Default)) {
            if (policy.nodeSet().isEmpty()) {
                throw new GuestMemoryException(Errno.EINVAL, op, "the policy names no node", -1);
            }
            for (int node : policy.nodeSet()) {
                // Checked before any mask is built: a node number is not a size to allocate by.
                if (node < 0 || node >= Mempolicy.MAX_NODES || !hostNodes.get(node)) {
                    throw new GuestMemoryException(Errno.EINVAL, op, "node " + node + " is not a node with memory on "
                            + "this host (nodes " + hostNodes + ")", -1);
                }
            }
        }
        KernelPolicy kernel = KernelPolicy.of(policy);
        if (!file.keepsFilePolicy()) {
            throw new GuestMemoryException(Errno.EOPNOTSUPP, op, "the " + backing + " backing keeps no memory policy per "
                    + "range of the file: the kernel would apply it to the library's mapping alone", -1);
        }
        return kernel;
    }

    /**
     * Sets the policy of {@code [offset, offset + length)}, a range of the file.
     *
     * @throws dev.guestmemfd.linux.LinuxException when the kernel refuses
     */
    void set(long offset, long length, KernelPolicy kernel) {
        file.setPolicy(offset, length, kernel.mode(), kernel.mask());
    }

    /**
     * {@return the policy of the page at {@code pageOffset}, as the kernel reports it}
     *
     * @throws GuestMemoryException {@code EOPNOTSUPP} when the kernel reports a policy that
     *                              {@link MemoryPolicy} does not name
     * @throws dev.guestmemfd.linux.LinuxException when the kernel refuses
     */
    MemoryPolicy get(String op, long pageOffset) {
        Mempolicy.Policy reported = file.policy(pageOffset);
        MemoryPolicy policy = new KernelPolicy(reported.mode(), reported.nodes()).toPolicy();
        if (policy == null) {
            throw new GuestMemoryException(Errno.EOPNOTSUPP, op, "the kernel reports policy mode " + reported.mode()
                    + " over nodes " + reported.nodes() + ", which this library does not set", -1);
        }
        return policy;
    }
}
