package dev.guestmemfd;

/** An owner refuses a transition; the library rolls the whole operation back. */
public final class OwnerRefusal extends Exception {
    private static final long serialVersionUID = 1L;

    private final long offset;

    /**
     * @param offset the file offset of the page the owner refuses
     * @param reason the architecture's reason, in words
     */
    public OwnerRefusal(long offset, String reason) {
        super(reason);
        this.offset = offset;
    }

    /** {@return the file offset of the refused page} */
    public long offset() {
        return offset;
    }
}
