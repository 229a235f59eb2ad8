package dev.guestmemfd.kvm;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.StructLayout;

/** x86-64 {@code struct kvm_regs}: the general-purpose registers, RIP and RFLAGS. */
public record Registers(long rax, long rbx, long rcx, long rdx, long rsi, long rdi, long rsp, long rbp,
                        long r8, long r9, long r10, long r11, long r12, long r13, long r14, long r15,
                        long rip, long rflags) {
    static final StructLayout LAYOUT = dev.guestmemfd.linux.KvmVcpuUapi.REGS;

    /** RFLAGS with only the always-one bit 1 set. */
    public static final long RFLAGS_RESERVED = 0x2;

    static Registers from(MemorySegment s) {
        long[] r = s.toArray(JAVA_LONG);
        return new Registers(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                r[12], r[13], r[14], r[15], r[16], r[17]);
    }

    MemorySegment toSegment(SegmentAllocator allocator) {
        return allocator.allocateFrom(JAVA_LONG, rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11,
                r12, r13, r14, r15, rip, rflags);
    }

    /** {@return registers to start a program at {@code rip} with stack {@code rsp} and RBX, RCX set} */
    public static Registers start(long rip, long rsp, long rbx, long rcx) {
        return new Registers(0, rbx, rcx, 0, 0, 0, rsp, 0, 0, 0, 0, 0, 0, 0, 0, 0, rip, RFLAGS_RESERVED);
    }
}
