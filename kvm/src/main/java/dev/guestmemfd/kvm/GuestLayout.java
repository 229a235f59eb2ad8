package dev.guestmemfd.kvm;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.MemorySegment;

/**
 * Where things live in the guest-physical memory of this project's guests: identity-mapped
 * page tables, the code, one stack and one region per vCPU. The guest runs in 64-bit long
 * mode from its first instruction: the host writes the page tables and sets the control
 * registers ({@link SpecialRegisters#longMode}).
 */
public final class GuestLayout {
    /** The top-level page table (PML4). */
    public static final long PML4 = 0x1000;
    /** The page-directory-pointer table. */
    public static final long PDPT = 0x2000;
    /** The page directory: 512 entries of 2 MiB map the first GiB. */
    public static final long PD = 0x3000;
    /** Where the program is loaded and starts. */
    public static final long CODE = 0x10000;
    /** Bytes reserved for the program. */
    public static final long CODE_SIZE = 0x10000;
    /** The top of vCPU 0's stack; each further vCPU's is 16 KiB lower. */
    public static final long STACK_TOP = 0x80000;
    /** The first vCPU's region; each vCPU has one region of {@link #REGION_SIZE}. */
    public static final long REGION_BASE = 0x400000;
    /** The size of a vCPU's region: the conversion ranges reach 2 MiB + 4 KiB into it. */
    public static final long REGION_SIZE = 0x400000;

    private static final long PRESENT = 1;
    private static final long WRITABLE = 2;
    private static final long HUGE = 1L << 7;

    private GuestLayout() {
    }

    /** {@return the guest-physical address of vCPU {@code i}'s region} */
    public static long region(int i) {
        return REGION_BASE + i * REGION_SIZE;
    }

    /** {@return the top of vCPU {@code i}'s stack} */
    public static long stackTop(int i) {
        return STACK_TOP - i * 0x4000L;
    }

    /** {@return the memory a guest with {@code vcpus} regions needs} */
    public static long memoryFor(int vcpus) {
        return region(vcpus);
    }

    /** Writes page tables that identity-map the first GiB with 2 MiB pages into {@code low} (guest-physical 0). */
    public static void writePageTables(MemorySegment low) {
        low.asSlice(PML4, 3 * 0x1000).fill((byte) 0);
        low.set(JAVA_LONG, PML4, PDPT | PRESENT | WRITABLE);
        low.set(JAVA_LONG, PDPT, PD | PRESENT | WRITABLE);
        for (long i = 0; i < 512; i++) {
            low.set(JAVA_LONG, PD + i * 8, (i << 21) | PRESENT | WRITABLE | HUGE);
        }
    }
}
