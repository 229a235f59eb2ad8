package dev.guestmemfd;

/** Who may reach a page: the kernel's memory attribute. */
public enum Attribute {
    /** The host may map, read and write the page, and so may the guest. */
    SHARED,
    /** Only the guest, and its owner acting for it, may reach the page. */
    PRIVATE
}
