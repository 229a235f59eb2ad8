package dev.guestmemfd;

/** The kind of host mapping, as {@code mmap}'s {@code MAP_SHARED} and {@code MAP_PRIVATE}. */
public enum MapType {
    /** Host writes reach the file, and the guest sees them. */
    SHARED,
    /** Copy-on-write: refused for guest memory ({@code EINVAL}), as the kernel refuses it. */
    PRIVATE
}
