package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.BitSet;

/**
 * NUMA memory policy of a mapping: {@code mbind(2)} and {@code get_mempolicy(2)}, which the C
 * library does not wrap (libnuma does), called by number through {@code syscall(2)}.
 *
 * <p>On a mapping of a file whose mapping operations keep a shared policy (shmem, so a memfd;
 * the kernel's guest_memfd from 6.19) the policy belongs to the file's range, not to the
 * mapping: every mapping of the file, and {@code fallocate}, allocates by it.
 */
public final class Mempolicy {
    public static final int MPOL_DEFAULT = 0;
    public static final int MPOL_PREFERRED = 1;
    public static final int MPOL_BIND = 2;
    public static final int MPOL_INTERLEAVE = 3;
    public static final int MPOL_LOCAL = 4;
    /** The mode flags the kernel may return with the mode (static, relative, numa balancing). */
    static final int MPOL_MODE_FLAGS = 0xffff0000 | (1 << 13) | (1 << 14) | (1 << 15);
    /** get_mempolicy: return the policy of the address given. */
    public static final int MPOL_F_ADDR = 1 << 1;
    /** mbind: move the pages already allocated that this mapping maps, where the kernel can. */
    public static final int MPOL_MF_MOVE = 1 << 1;
    /** The x86-64 system call numbers. */
    static final long SYS_MBIND = 237;
    static final long SYS_GET_MEMPOLICY = 239;
    /**
     * The node masks passed are this many bits: the kernel's largest node count on x86-64
     * (NODES_SHIFT 10), and the most it reads.
     */
    public static final int MAX_NODES = 1024;
    private static final int MASK_WORDS = MAX_NODES / 64;

    private Mempolicy() {
    }

    /** A policy as the kernel reports it: its mode, without flags, and its nodes. */
    public record Policy(int mode, BitSet nodes) {
    }

    private static final class syscall6 {
        static final MethodHandle HANDLE = Libc.downcall("syscall",
                FunctionDescriptor.of(JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG),
                Linker.Option.firstVariadicArg(1));
    }

    /**
     * Sets the policy of the pages of {@code range}, a page-aligned part of a mapping.
     *
     * @param mode  {@link #MPOL_DEFAULT} (nodes ignored), {@link #MPOL_BIND}, ...
     * @param nodes the node set, below {@link #MAX_NODES}
     * @param flags 0 or {@link #MPOL_MF_MOVE}
     * @throws LinuxException {@code EINVAL} for a mode, node set or range the kernel refuses
     *                        (a node without memory, an empty set for a mode that needs one),
     *                        {@code EFAULT} / {@code ENOMEM} for a range not mapped, {@code EIO}
     */
    public static void mbind(MemorySegment range, int mode, BitSet nodes, int flags) {
        if (nodes.length() > MAX_NODES) {
            throw new LinuxException(Errno.EINVAL.number(), "mbind(node " + (nodes.length() - 1) + " beyond " + MAX_NODES + ")");
        }
        MemorySegment capture = Libc.capture();
        long rc;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment mask = arena.allocate(JAVA_LONG, MASK_WORDS);
            long[] words = nodes.toLongArray();
            for (int i = 0; i < words.length; i++) {
                mask.setAtIndex(JAVA_LONG, i, words[i]);
            }
            boolean noMask = mode == MPOL_DEFAULT || mode == MPOL_LOCAL;
            // The kernel reads maxnode - 1 bits: one more than the mask holds.
            rc = (long) syscall6.HANDLE.invokeExact(capture, SYS_MBIND, range.address(), range.byteSize(), (long) mode,
                    noMask ? 0L : mask.address(), noMask ? 0L : (long) MAX_NODES + 1, (long) flags);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "mbind(addr=" + Libc.hex(range.address()) + ", len=" + range.byteSize() + ", mode="
                    + mode + ", nodes=" + nodes + ", flags=" + Libc.hex(flags) + ")");
        }
    }

    /**
     * {@return the policy that governs the page at {@code address}} ({@code MPOL_F_ADDR}): the
     * file's shared policy where the mapping keeps one, else the mapping's own.
     *
     * @throws LinuxException {@code EFAULT} for an address not mapped
     */
    public static Policy policyAt(MemorySegment address) {
        MemorySegment capture = Libc.capture();
        long rc;
        int mode;
        BitSet nodes;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment modeOut = arena.allocate(JAVA_INT);
            MemorySegment mask = arena.allocate(JAVA_LONG, MASK_WORDS);
            rc = (long) syscall6.HANDLE.invokeExact(capture, SYS_GET_MEMPOLICY, modeOut.address(), mask.address(),
                    (long) MAX_NODES, address.address(), (long) MPOL_F_ADDR, 0L);
            mode = modeOut.get(JAVA_INT, 0) & ~MPOL_MODE_FLAGS;
            nodes = BitSet.valueOf(mask.toArray(JAVA_LONG));
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "get_mempolicy(addr=" + Libc.hex(address.address()) + ", flags=MPOL_F_ADDR)");
        }
        return new Policy(mode, nodes);
    }

    /**
     * {@return the nodes of this host that have memory} from {@code /sys/devices/system/node/has_memory},
     * as a list such as {@code 0-3,5}; node 0 alone where the kernel shows none (no NUMA).
     */
    public static BitSet memoryNodes() {
        BitSet nodes = new BitSet();
        String list;
        try {
            list = Files.readString(Path.of("/sys/devices/system/node/has_memory")).strip();
        } catch (IOException | RuntimeException e) {
            nodes.set(0);
            return nodes;
        }
        for (String part : list.split(",")) {
            if (part.isEmpty()) {
                continue;
            }
            int dash = part.indexOf('-');
            int from = Integer.parseInt(dash < 0 ? part : part.substring(0, dash));
            int to = dash < 0 ? from : Integer.parseInt(part.substring(dash + 1));
            nodes.set(from, to + 1);
        }
        if (nodes.isEmpty()) {
            nodes.set(0);
        }
        return nodes;
    }
}
