package dev.guestmemfd;

/**
 * An operation on guest memory was refused: carries the errno that the kernel's
 * guest_memfd gives for the same mistake, and the cause in words.
 *
 * <p>A refused operation changed nothing: no page state, content or lease.
 */
public class GuestMemoryException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final String errnoName;
    private final long errorOffset;

    /**
     * @param errnoName   the errno equivalent, e.g. {@code EINVAL}
     * @param operation   what was called, with its arguments
     * @param cause       why it was refused, in words
     * @param errorOffset the first offset that caused the refusal, or -1
     */
    public GuestMemoryException(String errnoName, String operation, String cause, long errorOffset) {
        super(operation + ": " + errnoName + ": " + cause);
        this.errnoName = errnoName;
        this.errorOffset = errorOffset;
    }

    GuestMemoryException(String errnoName, String operation, String cause, Throwable underlying) {
        super(operation + ": " + errnoName + ": " + cause, underlying);
        this.errnoName = errnoName;
        this.errorOffset = -1;
    }

    /** {@return the errno equivalent: {@code EINVAL}, {@code EOPNOTSUPP}, {@code EAGAIN}, ...} */
    public String errno() {
        return errnoName;
    }

    /**
     * {@return the file offset that caused the refusal (like the kernel's {@code error_offset}),
     * or -1 when the refusal is not about one page}
     */
    public long errorOffset() {
        return errorOffset;
    }
}
