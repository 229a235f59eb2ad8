package dev.guestmemfd;

import dev.guestmemfd.linux.Mempolicy;
import java.util.BitSet;
import java.util.Set;
import java.util.TreeSet;

/**
 * A {@link MemoryPolicy} in the kernel's words: the mode and node mask that {@code mbind(2)}
 * takes and {@code get_mempolicy(2)} gives.
 */
record KernelPolicy(int mode, BitSet mask) {
    static KernelPolicy of(MemoryPolicy policy) {
        BitSet mask = new BitSet();
        for (int node : policy.nodeSet()) {
            mask.set(node);
        }
        int mode = switch (policy) {
            case MemoryPolicy.Default d -> Mempolicy.MPOL_DEFAULT;
            case MemoryPolicy.Bind b -> Mempolicy.MPOL_BIND;
            case MemoryPolicy.Preferred p -> Mempolicy.MPOL_PREFERRED;
            case MemoryPolicy.Interleave i -> Mempolicy.MPOL_INTERLEAVE;
        };
        return new KernelPolicy(mode, mask);
    }

    /** {@return the policy the kernel reported, or null for a mode that {@link MemoryPolicy} does not name} */
    MemoryPolicy toPolicy() {
        Set<Integer> nodes = new TreeSet<>(mask.stream().boxed().toList());
        return switch (mode) {
            case Mempolicy.MPOL_DEFAULT -> MemoryPolicy.DEFAULT;
            case Mempolicy.MPOL_BIND -> new MemoryPolicy.Bind(nodes);
            // PREFERRED with no node is the kernel's "local": not a policy this library sets.
            case Mempolicy.MPOL_PREFERRED -> nodes.size() == 1 ? new MemoryPolicy.Preferred(nodes.iterator().next()) : null;
            case Mempolicy.MPOL_INTERLEAVE -> new MemoryPolicy.Interleave(nodes);
            default -> null;
        };
    }
}
