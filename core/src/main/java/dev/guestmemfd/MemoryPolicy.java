package dev.guestmemfd;

import java.util.Collections;
import java.util.Objects;
import java.util.Set;
import java.util.SortedSet;
import java.util.TreeSet;

/**
 * Where the pages of a range of a guest memory file come from on a NUMA host: the kernel's
 * memory policy of that range ({@code mbind(2)}), set with {@link GuestMemory#setPolicy} and
 * read back with {@link GuestMemory#policy}. Nodes are the kernel's node numbers
 * ({@code /sys/devices/system/node/nodeN}).
 *
 * <p>A policy names a node set as given; whether the host has those nodes is checked when it
 * is applied, which refuses a set that is empty or names a node without memory.
 */
public sealed interface MemoryPolicy {
    /** The kernel's default: pages come from the node of the CPU that first touches them. */
    MemoryPolicy DEFAULT = new Default();

    /** The kernel's default policy ({@code MPOL_DEFAULT}). */
    record Default() implements MemoryPolicy {
    }

    /**
     * Pages come only from these nodes ({@code MPOL_BIND}); an allocation fails with
     * {@code ENOMEM} rather than take memory elsewhere.
     *
     * @param nodes the node set, not null; its order does not matter
     */
    record Bind(Set<Integer> nodes) implements MemoryPolicy {
        public Bind {
            nodes = Set.copyOf(Objects.requireNonNull(nodes, "nodes"));
        }
    }

    /**
     * Pages come from this node while it has memory, else from any ({@code MPOL_PREFERRED}).
     *
     * @param node a node number
     */
    record Preferred(int node) implements MemoryPolicy {
    }

    /**
     * Pages are spread over these nodes page by page, by file offset
     * ({@code MPOL_INTERLEAVE}), for bandwidth across nodes.
     *
     * @param nodes the node set, not null; its order does not matter
     */
    record Interleave(Set<Integer> nodes) implements MemoryPolicy {
        public Interleave {
            nodes = Set.copyOf(Objects.requireNonNull(nodes, "nodes"));
        }
    }

    /** {@return the node set of this policy, in order; empty for the default} */
    default SortedSet<Integer> nodeSet() {
        return Collections.unmodifiableSortedSet(new TreeSet<>(switch (this) {
            case Default d -> Set.<Integer>of();
            case Bind b -> b.nodes();
            case Preferred p -> Set.of(p.node());
            case Interleave i -> i.nodes();
        }));
    }
}
