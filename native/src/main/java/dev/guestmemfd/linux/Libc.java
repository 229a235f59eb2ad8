package dev.guestmemfd.linux;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;

/**
 * Plumbing shared by the bindings: the linker, the C library's symbols and the errno
 * capture buffer.
 *
 * <p>Each thread owns one capture buffer for its lifetime, so that a call on a hot path
 * allocates nothing; errno is read from it right after the call that wrote it.
 */
final class Libc {
    static final Linker LINKER = Linker.nativeLinker();
    private static final StructLayout CAPTURE_LAYOUT = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO =
            CAPTURE_LAYOUT.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    private static final Linker.Option CAPTURE_ERRNO = Linker.Option.captureCallState("errno");
    private static final ThreadLocal<MemorySegment> CAPTURE =
            ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(CAPTURE_LAYOUT));

    private Libc() {
    }

    /** A handle to a C library function whose first parameter is the errno capture buffer. */
    @SuppressWarnings("restricted") // the one place that links native code
    static MethodHandle downcall(String name, FunctionDescriptor descriptor, Linker.Option... options) {
        Linker.Option[] all = new Linker.Option[options.length + 1];
        all[0] = CAPTURE_ERRNO;
        System.arraycopy(options, 0, all, 1, options.length);
        MemorySegment symbol = LINKER.defaultLookup().find(name)
                .orElseThrow(() -> new UnsatisfiedLinkError("C library has no " + name));
        return LINKER.downcallHandle(symbol, descriptor, all);
    }

    /**
     * {@return this thread's errno capture buffer}
     * Every binding asks for it before its first native call, which makes it the one place
     * to refuse, in plain words, a JVM that denies this module native access.
     *
     * @throws IllegalCallerException where the JVM runs with {@code --illegal-native-access=deny}
     *                                and without {@code --enable-native-access} for this module
     */
    static MemorySegment capture() {
        if (NativeAccess.REFUSAL != null) {
            throw new IllegalCallerException(NativeAccess.REFUSAL);
        }
        return CAPTURE.get();
    }

    /**
     * Whether this JVM lets this module link native code, asked once. Without the flag, JDK 25
     * allows it with a warning by default; under {@code --illegal-native-access=deny} the first
     * link throws inside a class initializer, which every call site would otherwise report as
     * an {@code ExceptionInInitializerError} wrapped in an {@code AssertionError}.
     */
    private static final class NativeAccess {
        static final String REFUSAL = refusal();

        @SuppressWarnings("restricted") // the probe: links nothing, only asks the permission
        private static String refusal() {
            Module module = Libc.class.getModule();
            if (module.isNativeAccessEnabled()) {
                return null;
            }
            try {
                LINKER.downcallHandle(FunctionDescriptor.ofVoid());
                return null; // allowed, with the JDK's own warning
            } catch (IllegalCallerException denied) {
                String name = module.isNamed() ? module.getName() : "ALL-UNNAMED";
                return "guestmemfd calls Linux through java.lang.foreign, and this JVM denies native access to "
                        + (module.isNamed() ? "module " + name : "the class path")
                        + ": run java with --enable-native-access=" + name;
            }
        }
    }

    /** {@return the errno that the last call on this thread captured into {@code capture}} */
    static int errno(MemorySegment capture) {
        return (int) ERRNO.get(capture, 0L);
    }

    /** Throws the failure of a call that returned -1. */
    static LinuxException failure(MemorySegment capture, String call) {
        return new LinuxException(errno(capture), call);
    }

    static String hex(long value) {
        return "0x" + Long.toHexString(value);
    }
}
