package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/**
 * {@code ioctl(2)} and the {@code _IOC} encoding of request numbers (asm-generic, as on
 * x86-64 and arm64): direction in bits 30-31, argument size in bits 16-29, type in 8-15,
 * number in 0-7. Request numbers are derived from the argument's layout, never typed in hex.
 */
public final class Ioctl {
    static final int NRBITS = 8;
    static final int TYPEBITS = 8;
    static final int SIZEBITS = 14;
    static final int NRSHIFT = 0;
    static final int TYPESHIFT = NRSHIFT + NRBITS;
    static final int SIZESHIFT = TYPESHIFT + TYPEBITS;
    static final int DIRSHIFT = SIZESHIFT + SIZEBITS;

    public static final int NONE = 0;
    public static final int WRITE = 1;
    public static final int READ = 2;

    private Ioctl() {
    }

    private static final class ioctl_ptr {
        static final MethodHandle HANDLE = Libc.downcall("ioctl",
                FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS), Linker.Option.firstVariadicArg(2));
    }

    private static final class ioctl_long {
        static final MethodHandle HANDLE = Libc.downcall("ioctl",
                FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG), Linker.Option.firstVariadicArg(2));
    }

    /** {@return the request number for direction, type, number and argument size} */
    public static long ioc(int dir, int type, int nr, long size) {
        if (size < 0 || size >= (1L << SIZEBITS)) {
            throw new IllegalArgumentException("ioctl argument of " + size + " bytes does not fit _IOC's size field");
        }
        return ((long) dir << DIRSHIFT) | ((long) type << TYPESHIFT) | ((long) nr << NRSHIFT) | (size << SIZESHIFT);
    }

    /** {@return {@code _IO(type, nr)}: no argument} */
    public static long io(int type, int nr) {
        return ioc(NONE, type, nr, 0);
    }

    /** {@return {@code _IOR(type, nr, layout)}: the kernel writes the argument} */
    public static long ior(int type, int nr, MemoryLayout layout) {
        return ioc(READ, type, nr, layout.byteSize());
    }

    /** {@return {@code _IOW(type, nr, layout)}: the kernel reads the argument} */
    public static long iow(int type, int nr, MemoryLayout layout) {
        return ioc(WRITE, type, nr, layout.byteSize());
    }

    /** {@return {@code _IOWR(type, nr, layout)}: the kernel reads and writes the argument} */
    public static long iowr(int type, int nr, MemoryLayout layout) {
        return ioc(READ | WRITE, type, nr, layout.byteSize());
    }

    /**
     * Issues an ioctl whose argument is a pointer to {@code argument}.
     *
     * @return the call's non-negative result
     * @throws LinuxException with the errno when the call returns -1
     */
    public static int ioctl(int fd, long request, MemorySegment argument) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) ioctl_ptr.HANDLE.invokeExact(capture, fd, request, argument);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "ioctl(fd=" + fd + ", request=" + Libc.hex(request) + ", arg=<"
                    + argument.byteSize() + " bytes>)");
        }
        return rc;
    }

    /**
     * Issues an ioctl whose argument is an integer (or none: pass 0).
     *
     * @return the call's non-negative result
     * @throws LinuxException with the errno when the call returns -1
     */
    public static int ioctl(int fd, long request, long argument) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) ioctl_long.HANDLE.invokeExact(capture, fd, request, argument);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "ioctl(fd=" + fd + ", request=" + Libc.hex(request) + ", arg=" + argument + ")");
        }
        return rc;
    }

    /**
     * Issues an ioctl and returns -errno instead of throwing when it fails; for the calls
     * whose failure is an expected outcome (e.g. {@code KVM_RUN} returning {@code EFAULT}
     * with a memory-fault exit, or {@code EINTR} after a kick).
     *
     * @return the call's result, or minus the errno
     */
    public static int ioctlOrErrno(int fd, long request, long argument) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) ioctl_long.HANDLE.invokeExact(capture, fd, request, argument);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        return rc < 0 ? -Libc.errno(capture) : rc;
    }
}
