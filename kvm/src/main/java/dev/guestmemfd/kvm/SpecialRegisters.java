package dev.guestmemfd.kvm;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.StructLayout;

/**
 * x86-64 {@code struct kvm_sregs}: segment, descriptor-table and control registers.
 * The pending-interrupt bitmap is written as zero (no interrupt pending).
 */
public record SpecialRegisters(Segment cs, Segment ds, Segment es, Segment fs, Segment gs, Segment ss,
                               Segment tr, Segment ldt, long gdtBase, int gdtLimit, long idtBase, int idtLimit,
                               long cr0, long cr2, long cr3, long cr4, long cr8, long efer, long apicBase) {
    /** {@code struct kvm_segment}, 24 bytes. */
    public record Segment(long base, int limit, short selector, byte type, byte present, byte dpl, byte db,
                          byte s, byte l, byte g, byte avl, byte unusable) {
        static final StructLayout LAYOUT = dev.guestmemfd.linux.KvmVcpuUapi.SEGMENT;

        static Segment from(MemorySegment m) {
            return new Segment(m.get(JAVA_LONG, 0), m.get(JAVA_INT, 8), m.get(JAVA_SHORT, 12), m.get(JAVA_BYTE, 14),
                    m.get(JAVA_BYTE, 15), m.get(JAVA_BYTE, 16), m.get(JAVA_BYTE, 17), m.get(JAVA_BYTE, 18),
                    m.get(JAVA_BYTE, 19), m.get(JAVA_BYTE, 20), m.get(JAVA_BYTE, 21), m.get(JAVA_BYTE, 22));
        }

        void write(MemorySegment m) {
            m.set(JAVA_LONG, 0, base);
            m.set(JAVA_INT, 8, limit);
            m.set(JAVA_SHORT, 12, selector);
            byte[] bytes = {type, present, dpl, db, s, l, g, avl, unusable, 0};
            MemorySegment.copy(bytes, 0, m, JAVA_BYTE, 14, bytes.length);
        }

        /** {@return a flat 64-bit code segment (selector 8, long mode)} */
        public static Segment code64() {
            return new Segment(0, 0xffffffff, (short) 8, (byte) 11, (byte) 1, (byte) 0, (byte) 0, (byte) 1,
                    (byte) 1, (byte) 1, (byte) 0, (byte) 0);
        }

        /** {@return a flat read/write data segment (selector 16)} */
        public static Segment data() {
            return new Segment(0, 0xffffffff, (short) 16, (byte) 3, (byte) 1, (byte) 0, (byte) 1, (byte) 1,
                    (byte) 0, (byte) 1, (byte) 0, (byte) 0);
        }
    }

    static final StructLayout LAYOUT = dev.guestmemfd.linux.KvmVcpuUapi.SREGS;

    private static final long SEG = 24;
    private static final long DT = 8 * SEG;
    private static final long CR = DT + 32;

    public static final long CR0_PE = 1L << 0;
    public static final long CR0_MP = 1L << 1;
    public static final long CR0_ET = 1L << 4;
    public static final long CR0_NE = 1L << 5;
    public static final long CR0_WP = 1L << 16;
    public static final long CR0_AM = 1L << 18;
    public static final long CR0_PG = 1L << 31;
    public static final long CR4_PAE = 1L << 5;
    public static final long EFER_LME = 1L << 8;
    public static final long EFER_LMA = 1L << 10;

    static SpecialRegisters from(MemorySegment m) {
        Segment[] s = new Segment[8];
        for (int i = 0; i < 8; i++) {
            s[i] = Segment.from(m.asSlice(i * SEG, SEG));
        }
        return new SpecialRegisters(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
                m.get(JAVA_LONG, DT), Short.toUnsignedInt(m.get(JAVA_SHORT, DT + 8)),
                m.get(JAVA_LONG, DT + 16), Short.toUnsignedInt(m.get(JAVA_SHORT, DT + 24)),
                m.get(JAVA_LONG, CR), m.get(JAVA_LONG, CR + 8), m.get(JAVA_LONG, CR + 16),
                m.get(JAVA_LONG, CR + 24), m.get(JAVA_LONG, CR + 32), m.get(JAVA_LONG, CR + 40),
                m.get(JAVA_LONG, CR + 48));
    }

    MemorySegment toSegment(SegmentAllocator allocator) {
        MemorySegment m = allocator.allocate(LAYOUT);
        m.fill((byte) 0);
        Segment[] s = {cs, ds, es, fs, gs, ss, tr, ldt};
        for (int i = 0; i < 8; i++) {
            s[i].write(m.asSlice(i * SEG, SEG));
        }
        m.set(JAVA_LONG, DT, gdtBase);
        m.set(JAVA_SHORT, DT + 8, (short) gdtLimit);
        m.set(JAVA_LONG, DT + 16, idtBase);
        m.set(JAVA_SHORT, DT + 24, (short) idtLimit);
        long[] cr = {cr0, cr2, cr3, cr4, cr8, efer, apicBase};
        for (int i = 0; i < cr.length; i++) {
            m.set(JAVA_LONG, CR + i * 8L, cr[i]);
        }
        return m;
    }

    /**
     * {@return these registers switched to 64-bit long mode with paging from {@code pml4}}
     * Flat code and data segments; the task register and LDT are kept as the vCPU has them.
     */
    public SpecialRegisters longMode(long pml4) {
        Segment code = Segment.code64();
        Segment data = Segment.data();
        return new SpecialRegisters(code, data, data, data, data, data, tr, ldt, gdtBase, gdtLimit, idtBase,
                idtLimit, CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG, 0, pml4, CR4_PAE, 0,
                EFER_LME | EFER_LMA, apicBase);
    }
}
