package dev.guestmemfd;

import java.util.EnumSet;
import java.util.Set;

/** Creation flags of a guest memory file, with the kernel's bit values. */
public enum Flag {
    /** The host may map the file ({@code GUEST_MEMFD_FLAG_MMAP}). */
    MMAP(1L << 0),
    /** Pages start shared rather than private ({@code GUEST_MEMFD_FLAG_INIT_SHARED}). */
    INIT_SHARED(1L << 1),
    /** Pages are removed from the kernel's direct map ({@code GUEST_MEMFD_FLAG_NO_DIRECT_MAP}). */
    NO_DIRECT_MAP(1L << 2);

    /** Every bit that names a flag. */
    public static final long KNOWN_BITS = 0b111;

    private final long bit;

    Flag(long bit) {
        this.bit = bit;
    }

    /** {@return the flag's bit} */
    public long bit() {
        return bit;
    }

    /** {@return the bits of {@code flags}} */
    public static long bits(Set<Flag> flags) {
        long bits = 0;
        for (Flag f : flags) {
            bits |= f.bit;
        }
        return bits;
    }

    /** {@return the flags named by {@code bits}, ignoring unknown bits} */
    public static Set<Flag> of(long bits) {
        EnumSet<Flag> set = EnumSet.noneOf(Flag.class);
        for (Flag f : values()) {
            if ((bits & f.bit) != 0) {
                set.add(f);
            }
        }
        return set;
    }
}
