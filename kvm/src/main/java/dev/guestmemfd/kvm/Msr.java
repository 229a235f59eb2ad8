package dev.guestmemfd.kvm;

/**
 * One model-specific register of a vCPU.
 *
 * @param index the MSR number
 * @param value its value
 */
public record Msr(int index, long value) {
    /** The SYSENTER code segment, stack and entry point. */
    public static final int SYSENTER_CS = 0x174;
    public static final int SYSENTER_ESP = 0x175;
    public static final int SYSENTER_EIP = 0x176;
    /** The page attribute table. */
    public static final int PAT = 0x277;
    /** SYSCALL's segments, 64-bit and compatibility entry points, and flag mask. */
    public static final int STAR = 0xc0000081;
    public static final int LSTAR = 0xc0000082;
    public static final int CSTAR = 0xc0000083;
    public static final int SFMASK = 0xc0000084;
    /** The GS base SWAPGS exchanges with. */
    public static final int KERNEL_GS_BASE = 0xc0000102;
    /** The time-stamp counter. */
    public static final int TSC = 0x10;

    /**
     * The architectural MSRs a migration carries, in the order they are read: those an x86-64
     * kernel sets for system calls and per-CPU data, then the TSC last. KVM reads a list up to
     * the first register it refuses, so the ones every vCPU has come first.
     */
    static final int[] MIGRATED = {SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP, PAT, STAR, LSTAR, CSTAR, SFMASK,
        KERNEL_GS_BASE, TSC};
}
