package dev.guestmemfd;

import java.util.HashMap;
import java.util.Map;

/**
 * A Linux errno: its number and its symbolic name. Every refusal of this library and of its
 * KVM owner carries one ({@link GuestMemoryException#errno()}), the same value the kernel's
 * guest_memfd or KVM gives for the same mistake, so callers compare it, never parse text.
 *
 * <p>The named constants are the errnos the library gives itself; a kernel errno without a
 * constant here is still carried by {@link #of(int)}, with a name such as {@code E200}.
 * Two values are equal when their numbers are.
 */
public final class Errno implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    private static final Map<Integer, Errno> BY_NUMBER = new HashMap<>();
    private static final Map<String, Errno> BY_NAME = new HashMap<>();

    /** Operation not permitted: an owner refused a transition. */
    public static final Errno EPERM = define(1, "EPERM");
    /** No such file or directory. */
    public static final Errno ENOENT = define(2, "ENOENT");
    /** Interrupted system call. */
    public static final Errno EINTR = define(4, "EINTR");
    /** Input/output error. */
    public static final Errno EIO = define(5, "EIO");
    /** Bad file descriptor: the file, mapping, binding or log is closed. */
    public static final Errno EBADF = define(9, "EBADF");
    /** Try again: a host reference outlived the wait. */
    public static final Errno EAGAIN = define(11, "EAGAIN");
    /** Out of memory. */
    public static final Errno ENOMEM = define(12, "ENOMEM");
    /** Permission denied. */
    public static final Errno EACCES = define(13, "EACCES");
    /** Bad address: host access to a private page or past the end. */
    public static final Errno EFAULT = define(14, "EFAULT");
    /** Device or resource busy. */
    public static final Errno EBUSY = define(16, "EBUSY");
    /** File exists: overlapping guest-physical ranges. */
    public static final Errno EEXIST = define(17, "EEXIST");
    /** No such device: a backing or mapping this host or file does not offer. */
    public static final Errno ENODEV = define(19, "ENODEV");
    /** Invalid argument. */
    public static final Errno EINVAL = define(22, "EINVAL");
    /** Too many open files. */
    public static final Errno EMFILE = define(24, "EMFILE");
    /** Inappropriate ioctl for device: the kernel lacks the call. */
    public static final Errno ENOTTY = define(25, "ENOTTY");
    /** File too large: an offset plus a length overflows. */
    public static final Errno EFBIG = define(27, "EFBIG");
    /** No space left on device. */
    public static final Errno ENOSPC = define(28, "ENOSPC");
    /** Illegal seek. */
    public static final Errno ESPIPE = define(29, "ESPIPE");
    /** Resource deadlock would occur: a call that would wait on itself. */
    public static final Errno EDEADLK = define(35, "EDEADLK");
    /** Function not implemented. */
    public static final Errno ENOSYS = define(38, "ENOSYS");
    /** Bad message: a snapshot stream that is cut, altered or sealed with another key. */
    public static final Errno EBADMSG = define(74, "EBADMSG");
    /** Value too large for defined data type. */
    public static final Errno EOVERFLOW = define(75, "EOVERFLOW");
    /** Operation not supported. */
    public static final Errno EOPNOTSUPP = define(95, "EOPNOTSUPP");
    /** Connection timed out. */
    public static final Errno ETIMEDOUT = define(110, "ETIMEDOUT");
    /** Operation already in progress: a snapshot stream replayed. */
    public static final Errno EALREADY = define(114, "EALREADY");
    /** Memory page has hardware error. */
    public static final Errno EHWPOISON = define(133, "EHWPOISON");

    private final int number;
    private final String name;

    private Errno(int number, String name) {
        this.number = number;
        this.name = name;
    }

    private static Errno define(int number, String name) {
        Errno e = new Errno(number, name);
        BY_NUMBER.put(number, e);
        BY_NAME.put(name, e);
        return e;
    }

    /** {@return the kernel's number, e.g. 22} */
    public int number() {
        return number;
    }

    /** {@return the symbolic name, e.g. {@code EINVAL}} */
    public String name() {
        return name;
    }

    /** {@return the errno with this number, named where this class or the kernel's headers name it} */
    public static Errno of(int number) {
        Errno known = BY_NUMBER.get(number);
        return known != null ? known : new Errno(number, dev.guestmemfd.linux.Errno.nameOf(number));
    }

    /**
     * {@return the errno of this name}
     *
     * @throws IllegalArgumentException for a name that is not one of the constants here
     */
    public static Errno named(String name) {
        Errno known = BY_NAME.get(name);
        if (known == null) {
            dev.guestmemfd.linux.Errno linux;
            try {
                linux = dev.guestmemfd.linux.Errno.valueOf(name);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("no errno is named " + name);
            }
            return of(linux.number());
        }
        return known;
    }

    /** A deserialized errno is the constant of its number, so that {@code ==} holds for named ones. */
    @java.io.Serial
    private Object readResolve() {
        return of(number);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Errno other && other.number == number;
    }

    @Override
    public int hashCode() {
        return number;
    }

    /** {@return the name, e.g. {@code EINVAL}} */
    @Override
    public String toString() {
        return name;
    }
}
