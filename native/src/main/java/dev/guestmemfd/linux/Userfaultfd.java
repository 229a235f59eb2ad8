package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.invoke.MethodHandle;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * {@code userfaultfd(2)}: a file descriptor through which a process serves the page faults of
 * the ranges it registered, page by page ({@code UFFDIO_COPY}, {@code UFFDIO_ZEROPAGE}), wakes
 * the faulting threads ({@code UFFDIO_WAKE}), or marks pages poisoned ({@code UFFDIO_POISON}:
 * a later access fails instead of waiting). Only MISSING mode: a fault is reported where the
 * file has no page yet.
 *
 * <p>Faults raised by the kernel on a process's behalf (a system call copying from user memory,
 * KVM reaching guest memory through its memslot) are reported too: the descriptor is never
 * opened with {@code UFFD_USER_MODE_ONLY}.
 *
 * @implSpec Thread safe: the ioctls may be issued from any thread; one instance owns its
 * descriptor and a native buffer for its messages, used by the one thread that calls
 * {@link #poll}.
 */
public final class Userfaultfd implements AutoCloseable {
    /** {@code UFFDIO}: the ioctl type of userfaultfd. */
    static final int UFFDIO = 0xAA;
    /** The API version that {@code UFFDIO_API} accepts. */
    static final long UFFD_API = 0xAA;
    /** The x86-64 system call number of userfaultfd, which the C library does not wrap. */
    static final long SYS_USERFAULTFD = 323;
    static final int O_CLOEXEC = 0x80000;
    static final int O_NONBLOCK = 0x800;
    static final int O_RDWR = 0x2;

    /** A page fault message. */
    public static final int EVENT_PAGEFAULT = 0x12;
    /** The fault was a write. */
    public static final long PAGEFAULT_FLAG_WRITE = 1;
    /** Register in MISSING mode: report faults where no page exists. */
    public static final long REGISTER_MODE_MISSING = 1;
    /** {@code UFFD_FEATURE_POISON}: the descriptor accepts {@code UFFDIO_POISON}. */
    public static final long FEATURE_POISON = 1L << 14;
    /** {@code UFFD_FEATURE_MISSING_SHMEM}: shared memory (memfd) ranges may register. */
    public static final long FEATURE_MISSING_SHMEM = 1L << 5;
    /** {@code UFFD_FEATURE_MISSING_HUGETLBFS}: hugetlb ranges may register. */
    public static final long FEATURE_MISSING_HUGETLBFS = 1L << 4;

    /** {@code struct uffdio_api}. */
    public static final StructLayout API = MemoryLayout.structLayout(
            JAVA_LONG.withName("api"), JAVA_LONG.withName("features"), JAVA_LONG.withName("ioctls"));
    /** {@code struct uffdio_range}. */
    public static final StructLayout RANGE = MemoryLayout.structLayout(
            JAVA_LONG.withName("start"), JAVA_LONG.withName("len"));
    /** {@code struct uffdio_register}. */
    public static final StructLayout REGISTER = MemoryLayout.structLayout(
            RANGE.withName("range"), JAVA_LONG.withName("mode"), JAVA_LONG.withName("ioctls"));
    /** {@code struct uffdio_copy}. */
    public static final StructLayout COPY = MemoryLayout.structLayout(
            JAVA_LONG.withName("dst"), JAVA_LONG.withName("src"), JAVA_LONG.withName("len"),
            JAVA_LONG.withName("mode"), JAVA_LONG.withName("copy"));
    /** {@code struct uffdio_zeropage}, and {@code struct uffdio_poison}, which has its shape. */
    public static final StructLayout ZEROPAGE = MemoryLayout.structLayout(
            RANGE.withName("range"), JAVA_LONG.withName("mode"), JAVA_LONG.withName("result"));
    /** {@code struct uffd_msg}: event, then the page fault's flags, address and thread id. */
    public static final StructLayout MSG = MemoryLayout.structLayout(
            java.lang.foreign.ValueLayout.JAVA_BYTE.withName("event"), MemoryLayout.paddingLayout(7),
            JAVA_LONG.withName("flags"), JAVA_LONG.withName("address"), JAVA_INT.withName("ptid"),
            MemoryLayout.paddingLayout(4));

    /** Agrees on the API version and features. */
    public static final long UFFDIO_API = Ioctl.iowr(UFFDIO, 0x3F, API);
    /** Registers a range. */
    public static final long UFFDIO_REGISTER = Ioctl.iowr(UFFDIO, 0x00, REGISTER);
    /** Unregisters a range. */
    public static final long UFFDIO_UNREGISTER = Ioctl.ior(UFFDIO, 0x01, RANGE);
    /** Wakes the threads waiting on a range. */
    public static final long UFFDIO_WAKE = Ioctl.ior(UFFDIO, 0x02, RANGE);
    /** Fills missing pages with bytes. */
    public static final long UFFDIO_COPY = Ioctl.iowr(UFFDIO, 0x03, COPY);
    /** Fills missing pages with zeros. */
    public static final long UFFDIO_ZEROPAGE = Ioctl.iowr(UFFDIO, 0x04, ZEROPAGE);
    /** Marks missing pages poisoned. */
    public static final long UFFDIO_POISON = Ioctl.iowr(UFFDIO, 0x08, ZEROPAGE);
    /** {@code USERFAULTFD_IOC_NEW} on {@code /dev/userfaultfd}. */
    public static final long USERFAULTFD_IOC_NEW = Ioctl.io(UFFDIO, 0x00);

    private static final int MAX_MESSAGES = 64;
    private static final short POLLIN = 1;

    private final int fd;
    private final long features;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment messages = arena.allocate(MSG, MAX_MESSAGES);
    private final MemorySegment pollFd = arena.allocate(8);
    private volatile boolean closed;
    /**
     * Held shared by every call on the descriptor, exclusively by {@link #close}: a call that
     * races a close either ends before the descriptor is closed or finds it closed
     * ({@code EBADF}), never reaches a number the process may have given to another file since.
     */
    private final ReentrantReadWriteLock use = new ReentrantReadWriteLock();

    private Userfaultfd(int fd, long features) {
        this.fd = fd;
        this.features = features;
    }

    private static final class syscall1 {
        static final MethodHandle HANDLE = Libc.downcall("syscall",
                FunctionDescriptor.of(JAVA_LONG, JAVA_LONG, JAVA_LONG), Linker.Option.firstVariadicArg(1));
    }

    private static final class poll {
        static final MethodHandle HANDLE = Libc.downcall("poll", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
    }

    /**
     * Opens a non-blocking userfaultfd and agrees on the API, asking for {@code wanted}
     * features where the kernel offers them: through the system call, or through
     * {@code /dev/userfaultfd} where the system call is refused (a seccomp filter, or
     * {@code vm.unprivileged_userfaultfd=0} for a caller without the capability).
     *
     * @throws LinuxException {@code ENOSYS} where the kernel has no userfaultfd, {@code EPERM}
     *                        where both ways are refused, {@code EINVAL} for an API mismatch
     */
    public static Userfaultfd open(long wanted) {
        boolean viaSyscall = true;
        int fd;
        try {
            fd = bySyscall();
        } catch (LinuxException refused) {
            try {
                fd = byDevice();
                viaSyscall = false;
            } catch (LinuxException e) {
                e.addSuppressed(refused);
                throw e;
            }
        }
        // UFFDIO_API may be issued once per descriptor: the first, asking for nothing, learns
        // what the kernel offers; a second descriptor asks for what is wanted of that.
        long offered;
        try {
            offered = api(fd, 0);
        } finally {
            Fd.close(fd);
        }
        fd = viaSyscall ? bySyscall() : byDevice();
        try {
            api(fd, wanted & offered);
            return new Userfaultfd(fd, wanted & offered);
        } catch (LinuxException e) {
            Fd.close(fd);
            throw e;
        }
    }

    private static int bySyscall() {
        MemorySegment capture = Libc.capture();
        long rc;
        try {
            rc = (long) syscall1.HANDLE.invokeExact(capture, SYS_USERFAULTFD, (long) (O_CLOEXEC | O_NONBLOCK));
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "userfaultfd(O_CLOEXEC|O_NONBLOCK)");
        }
        return (int) rc;
    }

    private static int byDevice() {
        int dev = Fd.open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        try {
            return Ioctl.ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        } finally {
            Fd.close(dev);
        }
    }

    /** Agrees on the API asking for {@code features}; {@return the features the kernel offers} */
    private static long api(int fd, long features) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment api = a.allocate(API);
            api.set(JAVA_LONG, 0, UFFD_API);
            api.set(JAVA_LONG, 8, features);
            Ioctl.ioctl(fd, UFFDIO_API, api);
            return api.get(JAVA_LONG, 8);
        }
    }

    /**
     * Links the native calls that serving faults makes ({@code poll}, {@code read}, the fill
     * ioctls) by making each once on this descriptor, harmlessly: a poll that finds nothing, a
     * read that finds no message, a copy of no bytes. The first fault then waits for its page
     * only, not for the JVM to link those calls (milliseconds each in a fresh JVM).
     */
    public void link() {
        poll(0);
        enter("read");
        try {
            Fd.read(fd, messages.asSlice(0, MSG.byteSize()));
        } catch (LinuxException e) {
            // EAGAIN: no message, as expected; the call is linked all the same
        } finally {
            use.readLock().unlock();
        }
        try (Arena a = Arena.ofConfined()) {
            copy(a.allocate(COPY), 0, 0, 0);  // EINVAL: an empty range; linked all the same
        }
    }

    /** {@return the file descriptor} */
    public int fd() {
        return fd;
    }

    /** {@return the features the kernel agreed to, {@code UFFD_FEATURE_*} bits} */
    public long features() {
        return features;
    }

    /**
     * Registers {@code [address, address + length)} in MISSING mode: from now on a thread that
     * touches a page the file lacks there waits until this descriptor serves it.
     *
     * @return the ioctls the range supports, as a bit per ioctl number
     * @throws LinuxException {@code EINVAL} for a mapping userfaultfd does not serve (a
     *                        memfd_secret or guest_memfd mapping), {@code EBUSY} when another
     *                        descriptor has it
     */
    public long register(long address, long length) {
        enter("register");
        try (Arena a = Arena.ofConfined()) {
            MemorySegment reg = a.allocate(REGISTER);
            reg.set(JAVA_LONG, 0, address);
            reg.set(JAVA_LONG, 8, length);
            reg.set(JAVA_LONG, 16, REGISTER_MODE_MISSING);
            Ioctl.ioctl(fd, UFFDIO_REGISTER, reg);
            return reg.get(JAVA_LONG, 24);
        } finally {
            use.readLock().unlock();
        }
    }

    /** Unregisters a range: its faults are the kernel's own again, and threads waiting there are woken. */
    public void unregister(long address, long length) {
        rangeIoctl(UFFDIO_UNREGISTER, address, length);
    }

    /** Wakes the threads waiting on faults in the range (after it was filled some other way). */
    public void wake(long address, long length) {
        rangeIoctl(UFFDIO_WAKE, address, length);
    }

    private void rangeIoctl(long request, long address, long length) {
        enter("range ioctl");
        try (Arena a = Arena.ofConfined()) {
            MemorySegment range = a.allocate(RANGE);
            range.set(JAVA_LONG, 0, address);
            range.set(JAVA_LONG, 8, length);
            Ioctl.ioctl(fd, request, range);
        } finally {
            use.readLock().unlock();
        }
    }

    /**
     * Takes the descriptor for one call (the read lock, to release after it).
     *
     * @throws LinuxException {@code EBADF} once closed
     */
    private void enter(String call) {
        use.readLock().lock();
        if (closed) {
            use.readLock().unlock();
            throw new LinuxException(Errno.EBADF.number(), call + "(userfaultfd, closed)");
        }
    }

    /** {@return true with the descriptor taken for one call, false (nothing taken) once closed} */
    private boolean tryEnter() {
        use.readLock().lock();
        if (closed) {
            use.readLock().unlock();
            return false;
        }
        return true;
    }

    /**
     * Copies {@code length} bytes at {@code source} into the missing pages at {@code address}
     * atomically, and wakes the threads waiting there.
     *
     * @param args a {@link #COPY}-sized scratch segment of the calling thread
     * @return the bytes copied, or minus the errno: {@code -EEXIST} when a page is already
     *         there (the bytes before it were copied), {@code -EAGAIN} when the mapping changed
     *         under the copy
     */
    public long copy(MemorySegment args, long address, long source, long length) {
        args.set(JAVA_LONG, 0, address);
        args.set(JAVA_LONG, 8, source);
        args.set(JAVA_LONG, 16, length);
        args.set(JAVA_LONG, 24, 0L);
        args.set(JAVA_LONG, 32, 0L);
        if (!tryEnter()) {
            return -Errno.EBADF.number();
        }
        int rc;
        try {
            rc = Ioctl.ioctlOrErrno(fd, UFFDIO_COPY, args.address());
        } finally {
            use.readLock().unlock();
        }
        long copied = args.get(JAVA_LONG, 32);
        return rc < 0 ? (copied > 0 ? copied : rc) : copied;
    }

    /**
     * Maps zero pages into the missing pages of the range and wakes the threads waiting there.
     *
     * @param args a {@link #ZEROPAGE}-sized scratch segment of the calling thread
     * @return the bytes filled, or minus the errno ({@code -EEXIST} when a page is already there)
     */
    public long zeroPage(MemorySegment args, long address, long length) {
        return fill(UFFDIO_ZEROPAGE, args, address, length);
    }

    /**
     * Marks the missing pages of the range poisoned and wakes the threads waiting there: a later
     * access fails (KVM and system calls get an error, user code SIGBUS) instead of waiting.
     *
     * @return the bytes marked, or minus the errno ({@code -EINVAL} without {@link #FEATURE_POISON})
     */
    public long poison(MemorySegment args, long address, long length) {
        return fill(UFFDIO_POISON, args, address, length);
    }

    private long fill(long request, MemorySegment args, long address, long length) {
        args.set(JAVA_LONG, 0, address);
        args.set(JAVA_LONG, 8, length);
        args.set(JAVA_LONG, 16, 0L);
        args.set(JAVA_LONG, 24, 0L);
        if (!tryEnter()) {
            return -Errno.EBADF.number();
        }
        int rc;
        try {
            rc = Ioctl.ioctlOrErrno(fd, request, args.address());
        } finally {
            use.readLock().unlock();
        }
        long done = args.get(JAVA_LONG, 24);
        return rc < 0 ? (done > 0 ? done : rc) : done;
    }

    /**
     * {@return the addresses of the page faults read, at most 64, after waiting up to
     * {@code timeoutMillis} for them} Other events are skipped; empty after the timeout.
     */
    public long[] poll(int timeoutMillis) {
        enter("poll");
        try {
            return pollTaken(timeoutMillis);
        } finally {
            use.readLock().unlock();
        }
    }

    private long[] pollTaken(int timeoutMillis) {
        pollFd.set(JAVA_INT, 0, fd);
        pollFd.set(JAVA_SHORT, 4, POLLIN);
        pollFd.set(JAVA_SHORT, 6, (short) 0);
        MemorySegment capture = Libc.capture();
        int ready;
        try {
            ready = (int) poll.HANDLE.invokeExact(capture, pollFd, 1L, timeoutMillis);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (ready < 0) {
            int errno = Libc.errno(capture);
            if (errno == Errno.EINTR.number()) {
                return new long[0];
            }
            throw new LinuxException(errno, "poll(userfaultfd=" + fd + ")");
        }
        if (ready == 0) {
            return new long[0];
        }
        long bytes;
        try {
            bytes = Fd.read(fd, messages);
        } catch (LinuxException e) {
            if (e.is(Errno.EAGAIN)) {
                return new long[0];  // the fault resolved itself before it was read
            }
            throw e;
        }
        int count = (int) (bytes / MSG.byteSize());
        long[] addresses = new long[count];
        int faults = 0;
        for (int i = 0; i < count; i++) {
            MemorySegment msg = messages.asSlice(i * MSG.byteSize(), MSG.byteSize());
            if ((msg.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0) & 0xff) == EVENT_PAGEFAULT) {
                addresses[faults++] = msg.get(JAVA_LONG, 16);
            }
        }
        return faults == count ? addresses : java.util.Arrays.copyOf(addresses, faults);
    }

    /** {@return true once closed} */
    public boolean isClosed() {
        return closed;
    }

    /**
     * Closes the descriptor: every range it registered returns to the kernel's own fault
     * handling and every waiting thread is woken to fault again. Waits for the calls in
     * flight (a {@link #poll} for at most its timeout); later calls find it closed.
     */
    @Override
    public void close() {
        use.writeLock().lock();
        try {
            if (closed) {
                return;
            }
            closed = true;
            Fd.close(fd);
            arena.close();
        } finally {
            use.writeLock().unlock();
        }
    }
}
