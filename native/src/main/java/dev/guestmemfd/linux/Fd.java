package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/**
 * Calls on a file descriptor: {@code open}, {@code close}, {@code ftruncate}, {@code fstat},
 * {@code fallocate}, {@code lseek}, {@code read}, {@code write}, {@code pread}, {@code pwrite}.
 */
public final class Fd {
    /** fallocate: keep the file size. */
    public static final int FALLOC_FL_KEEP_SIZE = 0x01;
    /** fallocate: deallocate the range (needs KEEP_SIZE). */
    public static final int FALLOC_FL_PUNCH_HOLE = 0x02;
    /** fallocate: do not zero the range (privileged, filesystem specific). */
    public static final int FALLOC_FL_NO_HIDE_STALE = 0x04;
    /** fallocate: remove the range and shift the rest down. */
    public static final int FALLOC_FL_COLLAPSE_RANGE = 0x08;
    /** fallocate: zero the range. */
    public static final int FALLOC_FL_ZERO_RANGE = 0x10;
    /** fallocate: insert a hole and shift the rest up. */
    public static final int FALLOC_FL_INSERT_RANGE = 0x20;
    /** fallocate: make the range shared copy-on-write-free. */
    public static final int FALLOC_FL_UNSHARE_RANGE = 0x40;

    public static final int O_RDONLY = 0;
    public static final int O_RDWR = 2;
    public static final int O_CLOEXEC = 0x80000;

    public static final int SEEK_SET = 0;
    public static final int SEEK_DATA = 3;
    public static final int SEEK_HOLE = 4;

    private Fd() {
    }

    private static final class open {
        static final MethodHandle HANDLE = Libc.downcall("open",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT), Linker.Option.firstVariadicArg(2));
    }

    private static final class close {
        static final MethodHandle HANDLE = Libc.downcall("close", FunctionDescriptor.of(JAVA_INT, JAVA_INT));
    }

    private static final class ftruncate {
        static final MethodHandle HANDLE =
                Libc.downcall("ftruncate", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG));
    }

    private static final class fstat {
        static final MethodHandle HANDLE =
                Libc.downcall("fstat", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS));
    }

    private static final class fallocate {
        static final MethodHandle HANDLE = Libc.downcall("fallocate",
                FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG));
    }

    private static final class lseek {
        static final MethodHandle HANDLE =
                Libc.downcall("lseek", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT));
    }

    private static final class read {
        static final MethodHandle HANDLE =
                Libc.downcall("read", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG));
    }

    private static final class write {
        static final MethodHandle HANDLE =
                Libc.downcall("write", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG));
    }

    private static final class pread {
        static final MethodHandle HANDLE = Libc.downcall("pread",
                FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG));
    }

    private static final class pwrite {
        static final MethodHandle HANDLE = Libc.downcall("pwrite",
                FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG));
    }

    /**
     * {@return a new file descriptor for {@code path}}
     *
     * @throws LinuxException {@code ENOENT}, {@code EACCES}, ...
     */
    public static int open(String path, int flags) {
        MemorySegment capture = Libc.capture();
        int fd;
        try (Arena arena = Arena.ofConfined()) {
            fd = (int) open.HANDLE.invokeExact(capture, arena.allocateFrom(path), flags, 0);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (fd < 0) {
            throw Libc.failure(capture, "open(path=" + path + ", flags=" + Libc.hex(flags) + ")");
        }
        return fd;
    }

    /**
     * Closes a file descriptor.
     *
     * @throws LinuxException {@code EBADF} when {@code fd} is not open
     */
    public static void close(int fd) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) close.HANDLE.invokeExact(capture, fd);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "close(fd=" + fd + ")");
        }
    }

    /**
     * Sets the size of a file.
     *
     * @throws LinuxException {@code EINVAL} for a negative length or a file whose size is fixed,
     *                        {@code EBADF}, ...
     */
    public static void ftruncate(int fd, long length) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) ftruncate.HANDLE.invokeExact(capture, fd, length);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "ftruncate(fd=" + fd + ", length=" + length + ")");
        }
    }

    /**
     * {@return the status of an open file}
     *
     * @throws LinuxException {@code EBADF}
     */
    public static Stat fstat(int fd) {
        MemorySegment capture = Libc.capture();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(Stat.LAYOUT);
            int rc;
            try {
                rc = (int) fstat.HANDLE.invokeExact(capture, fd, buf);
            } catch (Throwable t) {
                throw new AssertionError(t);
            }
            if (rc < 0) {
                throw Libc.failure(capture, "fstat(fd=" + fd + ")");
            }
            return Stat.from(buf);
        }
    }

    /**
     * Allocates, punches or otherwise manipulates a byte range of a file.
     *
     * @param mode a combination of the {@code FALLOC_FL_*} bits (0 allocates and may grow the file)
     * @throws LinuxException {@code EINVAL}, {@code EOPNOTSUPP}, {@code ENOSPC}, ...
     */
    public static void fallocate(int fd, int mode, long offset, long length) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) fallocate.HANDLE.invokeExact(capture, fd, mode, offset, length);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "fallocate(fd=" + fd + ", mode=" + Libc.hex(mode)
                    + ", offset=" + offset + ", len=" + length + ")");
        }
    }

    /**
     * {@return the new file offset}
     *
     * @param whence {@link #SEEK_SET}, {@link #SEEK_DATA}, {@link #SEEK_HOLE}, ...
     * @throws LinuxException {@code ESPIPE} on files that cannot seek, {@code ENXIO} past the data
     */
    public static long lseek(int fd, long offset, int whence) {
        MemorySegment capture = Libc.capture();
        long rc;
        try {
            rc = (long) lseek.HANDLE.invokeExact(capture, fd, offset, whence);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "lseek(fd=" + fd + ", offset=" + offset + ", whence=" + whence + ")");
        }
        return rc;
    }

    /** {@return the number of bytes read into {@code buffer}} */
    public static long read(int fd, MemorySegment buffer) {
        MemorySegment capture = Libc.capture();
        long rc;
        try {
            rc = (long) read.HANDLE.invokeExact(capture, fd, buffer, buffer.byteSize());
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "read(fd=" + fd + ", count=" + buffer.byteSize() + ")");
        }
        return rc;
    }

    /** {@return the number of bytes written from {@code buffer}} */
    public static long write(int fd, MemorySegment buffer) {
        MemorySegment capture = Libc.capture();
        long rc;
        try {
            rc = (long) write.HANDLE.invokeExact(capture, fd, buffer, buffer.byteSize());
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "write(fd=" + fd + ", count=" + buffer.byteSize() + ")");
        }
        return rc;
    }

    /** {@return the number of bytes read into {@code buffer} from file offset {@code offset}} */
    public static long pread(int fd, MemorySegment buffer, long offset) {
        MemorySegment capture = Libc.capture();
        long rc;
        try {
            rc = (long) pread.HANDLE.invokeExact(capture, fd, buffer, buffer.byteSize(), offset);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "pread(fd=" + fd + ", count=" + buffer.byteSize() + ", offset=" + offset + ")");
        }
        return rc;
    }

    /** {@return the number of bytes written from {@code buffer} at file offset {@code offset}} */
    public static long pwrite(int fd, MemorySegment buffer, long offset) {
        MemorySegment capture = Libc.capture();
        long rc;
        try {
            rc = (long) pwrite.HANDLE.invokeExact(capture, fd, buffer, buffer.byteSize(), offset);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "pwrite(fd=" + fd + ", count=" + buffer.byteSize() + ", offset=" + offset + ")");
        }
        return rc;
    }
}
