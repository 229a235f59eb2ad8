package dev.guestmemfd;

/**
 * Host code touched a page it may not access: a private page, or a page at or past the end
 * of the file. This is the kernel's SIGBUS, raised as an exception the caller can catch.
 * The access read or wrote nothing.
 */
public final class HostAccessFault extends GuestMemoryException {
    private static final long serialVersionUID = 1L;

    /**
     * @param operation the access, with its arguments
     * @param offset    the file offset of the first page that may not be accessed
     * @param cause     why: private, or past the end
     */
    public HostAccessFault(String operation, long offset, String cause) {
        super(Errno.EFAULT, operation, "host access fault at file offset 0x" + Long.toHexString(offset) + ": " + cause, offset);
    }
}
