package dev.guestmemfd.linux;

/**
 * A Linux call failed: carries the errno, its name and the call with its arguments.
 *
 * <p>The message reads like {@code fallocate(fd=5, mode=0x3, offset=1, len=4096): EINVAL (22)}.
 */
public final class LinuxException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int errno;
    private final String call;

    /**
     * @param errno the errno captured with the call
     * @param call  the call and its arguments, as {@code name(arg=value, ...)}
     */
    public LinuxException(int errno, String call) {
        super(call + ": " + Errno.nameOf(errno) + " (" + errno + ")");
        this.errno = errno;
        this.call = call;
    }

    /** {@return the errno number} */
    public int errno() {
        return errno;
    }

    /** {@return the errno's symbolic name, e.g. {@code EINVAL}} */
    public String errnoName() {
        return Errno.nameOf(errno);
    }

    /** {@return true when this failure carries the given errno} */
    public boolean is(Errno e) {
        return errno == e.number();
    }

    /** {@return the call and its arguments} */
    public String call() {
        return call;
    }
}
