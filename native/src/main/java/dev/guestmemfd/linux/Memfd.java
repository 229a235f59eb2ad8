package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/** {@code memfd_create(2)} and {@code memfd_secret(2)}: anonymous memory files. */
public final class Memfd {
    /** Close the descriptor on {@code exec}. */
    public static final int MFD_CLOEXEC = 0x1;
    /** Allow file seals. */
    public static final int MFD_ALLOW_SEALING = 0x2;
    /** Back the file with huge pages from the hugetlb pool. */
    public static final int MFD_HUGETLB = 0x4;
    /** With {@link #MFD_HUGETLB}: where the log2 of the huge page size goes in the flags. */
    public static final int MFD_HUGE_SHIFT = 26;
    /** With {@link #MFD_HUGETLB}: 2 MiB huge pages. */
    public static final int MFD_HUGE_2MB = 21 << MFD_HUGE_SHIFT;
    /** With {@link #MFD_HUGETLB}: 1 GiB huge pages. */
    public static final int MFD_HUGE_1GB = 30 << MFD_HUGE_SHIFT;
    /** memfd_secret's only flag: close on exec. */
    public static final int SECRET_CLOEXEC = 0x80000; // O_CLOEXEC
    /** The x86-64 system call number of memfd_secret, which the C library does not wrap. */
    static final long SYS_MEMFD_SECRET = 447;

    private Memfd() {
    }

    private static final class memfd_create {
        static final MethodHandle HANDLE =
                Libc.downcall("memfd_create", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
    }

    private static final class syscall1 {
        static final MethodHandle HANDLE = Libc.downcall("syscall",
                FunctionDescriptor.of(JAVA_LONG, JAVA_LONG, JAVA_LONG), Linker.Option.firstVariadicArg(1));
    }

    /**
     * {@return a new memory file descriptor}
     *
     * @param name  a name for debugging ({@code /proc/self/fd} shows {@code memfd:name})
     * @param flags {@link #MFD_CLOEXEC}, {@link #MFD_HUGETLB}, ...
     * @throws LinuxException {@code EINVAL} for unknown flags, {@code ENOMEM}, {@code EMFILE}, ...
     */
    public static int create(String name, int flags) {
        MemorySegment capture = Libc.capture();
        int fd;
        try (Arena arena = Arena.ofConfined()) {
            fd = (int) memfd_create.HANDLE.invokeExact(capture, arena.allocateFrom(name), flags);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (fd < 0) {
            throw Libc.failure(capture, "memfd_create(name=" + name + ", flags=" + Libc.hex(flags) + ")");
        }
        return fd;
    }

    /**
     * {@return a new secret memory file descriptor, whose pages leave the kernel's direct map}
     *
     * @throws LinuxException {@code ENOSYS} where the kernel lacks memfd_secret (not enabled
     *                        with {@code secretmem.enable}), {@code EINVAL} for unknown flags
     */
    public static int createSecret(int flags) {
        MemorySegment capture = Libc.capture();
        long fd;
        try {
            fd = (long) syscall1.HANDLE.invokeExact(capture, SYS_MEMFD_SECRET, (long) flags);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (fd < 0) {
            throw Libc.failure(capture, "memfd_secret(flags=" + Libc.hex(flags) + ")");
        }
        return (int) fd;
    }
}
