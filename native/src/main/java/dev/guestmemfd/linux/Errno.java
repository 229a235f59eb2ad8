package dev.guestmemfd.linux;

import java.util.HashMap;
import java.util.Map;

/**
 * The Linux (x86-64 and arm64 generic) errno values that the bindings and the library name.
 *
 * <p>The numbers are the kernel's ({@code include/uapi/asm-generic/errno-base.h} and
 * {@code errno.h}); an errno that is not listed here is still carried by number.
 */
public enum Errno {
    EPERM(1), ENOENT(2), ESRCH(3), EINTR(4), EIO(5), ENXIO(6), E2BIG(7), EBADF(9), EAGAIN(11),
    ENOMEM(12), EACCES(13), EFAULT(14), EBUSY(16), EEXIST(17), EXDEV(18), ENODEV(19),
    ENOTDIR(20), EISDIR(21), EINVAL(22), ENFILE(23), EMFILE(24), ENOTTY(25), ETXTBSY(26),
    EFBIG(27), ENOSPC(28), ESPIPE(29), EROFS(30), ERANGE(34), EDEADLK(35), ENOSYS(38),
    EBADMSG(74), EOVERFLOW(75), EOPNOTSUPP(95), ETIMEDOUT(110), EALREADY(114), EHWPOISON(133);

    private static final Map<Integer, Errno> BY_NUMBER = new HashMap<>();

    static {
        for (Errno e : values()) {
            BY_NUMBER.put(e.number, e);
        }
    }

    private final int number;

    Errno(int number) {
        this.number = number;
    }

    /** {@return the kernel's number for this errno} */
    public int number() {
        return number;
    }

    /** {@return the errno with this number, or {@code null} when this enum does not name it} */
    public static Errno of(int number) {
        return BY_NUMBER.get(number);
    }

    /** {@return the symbolic name of an errno number, e.g. {@code EINVAL}, or {@code E<n>} when unnamed} */
    public static String nameOf(int number) {
        Errno e = of(number);
        return e == null ? "E" + number : e.name();
    }
}
