package dev.guestmemfd;

/**
 * An operation on guest memory was refused: carries the errno that the kernel's
 * guest_memfd gives for the same mistake, and the cause in words.
 *
 * <p>A refused operation changed nothing: no page state, content or lease.
 */
public class GuestMemoryException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final Errno errno;
    private final long errorOffset;

    /**
     * @param errno       the errno equivalent, e.g. {@link Errno#EINVAL}
     * @param operation   what was called, with its arguments
     * @param cause       why it was refused, in words
     * @param errorOffset the first offset that caused the refusal, or -1
     */
    public GuestMemoryException(Errno errno, String operation, String cause, long errorOffset) {
        super(operation + ": " + errno.name() + ": " + cause);
        this.errno = errno;
        this.errorOffset = errorOffset;
    }

    /** {@return the errno equivalent: {@link Errno#EINVAL}, {@link Errno#EOPNOTSUPP}, {@link Errno#EAGAIN}, ...} */
    public Errno errno() {
        return errno;
    }

    /**
     * {@return the file offset that caused the refusal (like the kernel's {@code error_offset}),
     * or -1 when the refusal is not about one page}
     */
    public long errorOffset() {
        return errorOffset;
    }
}
