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
 * Thread-directed signals, as a VMM uses them to kick a vCPU thread out of {@code KVM_RUN}:
 * {@code gettid}, {@code tgkill}, {@code pthread_sigmask} and {@code sigtimedwait}.
 *
 * <p>The kick signal stays blocked in the vCPU thread except inside {@code KVM_RUN}
 * ({@code KVM_SET_SIGNAL_MASK}), so no handler ever runs in the JVM: the signal only makes
 * {@code KVM_RUN} return {@code EINTR}, and {@link #consume} clears it afterwards.
 */
public final class Signals {
    public static final int SIG_BLOCK = 0;
    public static final int SIG_UNBLOCK = 1;
    /** The kick: a real-time signal that neither the JVM nor the C library uses. */
    public static final int KICK = 40;
    /** Bytes of the C library's {@code sigset_t}. */
    static final long SIGSET_BYTES = 128;
    /** Bytes of the kernel's sigset, as {@code KVM_SET_SIGNAL_MASK} wants it. */
    public static final int KERNEL_SIGSET_BYTES = 8;

    private static final long SYS_GETTID = 186;
    private static final long SYS_TGKILL = 234;

    private Signals() {
    }

    private static final class syscall0 {
        static final MethodHandle HANDLE = Libc.downcall("syscall",
                FunctionDescriptor.of(JAVA_LONG, JAVA_LONG), Linker.Option.firstVariadicArg(1));
    }

    private static final class syscall3 {
        static final MethodHandle HANDLE = Libc.downcall("syscall",
                FunctionDescriptor.of(JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG),
                Linker.Option.firstVariadicArg(1));
    }

    private static final class getpid {
        static final MethodHandle HANDLE = Libc.downcall("getpid", FunctionDescriptor.of(JAVA_INT));
    }

    private static final class pthread_sigmask {
        static final MethodHandle HANDLE = Libc.downcall("pthread_sigmask",
                FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, ADDRESS));
    }

    private static final class sigtimedwait {
        static final MethodHandle HANDLE = Libc.downcall("sigtimedwait",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
    }

    /** {@return the kernel thread id of the calling thread} */
    public static int gettid() {
        try {
            return (int) (long) syscall0.HANDLE.invokeExact(Libc.capture(), SYS_GETTID);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
    }

    /** {@return this process's id} */
    public static int getpid() {
        try {
            return (int) getpid.HANDLE.invokeExact(Libc.capture());
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
    }

    /**
     * Sends {@code signal} to thread {@code tid} of this process.
     *
     * @throws LinuxException {@code ESRCH} when the thread is gone, {@code EINVAL}
     */
    public static void tgkill(int tid, int signal) {
        MemorySegment capture = Libc.capture();
        long rc;
        try {
            rc = (long) syscall3.HANDLE.invokeExact(capture, SYS_TGKILL, (long) getpid(), (long) tid, (long) signal);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "tgkill(tid=" + tid + ", sig=" + signal + ")");
        }
    }

    /**
     * Blocks or unblocks {@code signal} in the calling thread.
     *
     * @param how {@link #SIG_BLOCK} or {@link #SIG_UNBLOCK}
     */
    public static void mask(int how, int signal) {
        MemorySegment capture = Libc.capture();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment set = sigset(arena, SIGSET_BYTES, signal);
            int rc = (int) pthread_sigmask.HANDLE.invokeExact(capture, how, set, MemorySegment.NULL);
            if (rc != 0) {
                throw new LinuxException(rc, "pthread_sigmask(how=" + how + ", sig=" + signal + ")");
            }
        } catch (LinuxException e) {
            throw e;
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
    }

    /**
     * Clears a pending {@code signal} of the calling thread, if there is one, without waiting.
     *
     * @return true when one was pending
     */
    public static boolean consume(int signal) {
        MemorySegment capture = Libc.capture();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment set = sigset(arena, SIGSET_BYTES, signal);
            MemorySegment zero = arena.allocate(16);  // struct timespec {0, 0}
            int rc = (int) sigtimedwait.HANDLE.invokeExact(capture, set, MemorySegment.NULL, zero);
            if (rc < 0 && !(Libc.errno(capture) == Errno.EAGAIN.number())) {
                throw Libc.failure(capture, "sigtimedwait(sig=" + signal + ")");
            }
            return rc == signal;
        } catch (LinuxException e) {
            throw e;
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
    }

    /** {@return a signal set of {@code bytes} bytes with only {@code signals} in it} */
    public static MemorySegment sigset(Arena arena, long bytes, int... signals) {
        MemorySegment set = arena.allocate(bytes, 8);
        set.fill((byte) 0);
        for (int s : signals) {
            long bit = s - 1;
            long word = bit / 64;
            set.set(JAVA_LONG, word * 8, set.get(JAVA_LONG, word * 8) | (1L << (bit % 64)));
        }
        return set;
    }
}
