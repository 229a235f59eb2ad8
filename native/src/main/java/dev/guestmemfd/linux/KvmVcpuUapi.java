package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import java.lang.foreign.MemoryLayout;
import java.lang.foreign.StructLayout;

/**
 * The part of the KVM user-space API ({@code include/uapi/linux/kvm.h}, x86-64) that running a
 * small VM needs beside memory management ({@link KvmUapi}): capabilities and the dirty log of
 * a VM, and a vCPU's registers, FPU state, pending events, MSRs and its {@code kvm_run} page.
 * Request numbers are derived from the structs' layouts.
 */
public final class KvmVcpuUapi {
    /** {@code struct kvm_enable_cap}: cap, flags, args[4], pad[64]. */
    public static final StructLayout ENABLE_CAP = MemoryLayout.structLayout(JAVA_INT.withName("cap"),
            JAVA_INT.withName("flags"), MemoryLayout.sequenceLayout(4, JAVA_LONG).withName("args"),
            MemoryLayout.sequenceLayout(64, JAVA_BYTE).withName("pad"));
    public static final long KVM_ENABLE_CAP = Ioctl.iow(KvmUapi.KVMIO, 0xa3, ENABLE_CAP);
    /** {@code struct kvm_dirty_log}: slot, padding, bitmap pointer. */
    public static final StructLayout DIRTY_LOG = MemoryLayout.structLayout(JAVA_INT.withName("slot"),
            JAVA_INT.withName("padding"), JAVA_LONG.withName("dirty_bitmap"));
    public static final long KVM_GET_DIRTY_LOG = Ioctl.iow(KvmUapi.KVMIO, 0x42, DIRTY_LOG);

    /** x86-64 {@code struct kvm_regs}: the general-purpose registers, RIP and RFLAGS, 144 bytes. */
    public static final StructLayout REGS = MemoryLayout.structLayout(
            JAVA_LONG.withName("rax"), JAVA_LONG.withName("rbx"), JAVA_LONG.withName("rcx"),
            JAVA_LONG.withName("rdx"), JAVA_LONG.withName("rsi"), JAVA_LONG.withName("rdi"),
            JAVA_LONG.withName("rsp"), JAVA_LONG.withName("rbp"), JAVA_LONG.withName("r8"),
            JAVA_LONG.withName("r9"), JAVA_LONG.withName("r10"), JAVA_LONG.withName("r11"),
            JAVA_LONG.withName("r12"), JAVA_LONG.withName("r13"), JAVA_LONG.withName("r14"),
            JAVA_LONG.withName("r15"), JAVA_LONG.withName("rip"), JAVA_LONG.withName("rflags"));
    /** {@code struct kvm_segment}, 24 bytes. */
    public static final StructLayout SEGMENT = MemoryLayout.structLayout(
            JAVA_LONG.withName("base"), JAVA_INT.withName("limit"), JAVA_SHORT.withName("selector"),
            JAVA_BYTE.withName("type"), JAVA_BYTE.withName("present"), JAVA_BYTE.withName("dpl"),
            JAVA_BYTE.withName("db"), JAVA_BYTE.withName("s"), JAVA_BYTE.withName("l"),
            JAVA_BYTE.withName("g"), JAVA_BYTE.withName("avl"), JAVA_BYTE.withName("unusable"),
            JAVA_BYTE.withName("padding"));
    /** x86-64 {@code struct kvm_sregs}: segment, descriptor-table and control registers, 312 bytes. */
    public static final StructLayout SREGS = MemoryLayout.structLayout(
            MemoryLayout.sequenceLayout(8, SEGMENT).withName("segments"),
            MemoryLayout.sequenceLayout(2, MemoryLayout.structLayout(JAVA_LONG.withName("base"),
                    JAVA_SHORT.withName("limit"), MemoryLayout.sequenceLayout(3, JAVA_SHORT).withName("padding")))
                    .withName("dtables"),
            JAVA_LONG.withName("cr0"), JAVA_LONG.withName("cr2"), JAVA_LONG.withName("cr3"),
            JAVA_LONG.withName("cr4"), JAVA_LONG.withName("cr8"), JAVA_LONG.withName("efer"),
            JAVA_LONG.withName("apic_base"), MemoryLayout.sequenceLayout(4, JAVA_LONG).withName("interrupt_bitmap"));

    public static final long KVM_GET_REGS = Ioctl.ior(KvmUapi.KVMIO, 0x81, REGS);
    public static final long KVM_SET_REGS = Ioctl.iow(KvmUapi.KVMIO, 0x82, REGS);
    public static final long KVM_GET_SREGS = Ioctl.ior(KvmUapi.KVMIO, 0x83, SREGS);
    public static final long KVM_SET_SREGS = Ioctl.iow(KvmUapi.KVMIO, 0x84, SREGS);
    /** {@code _IOW(KVMIO, 0x8b, struct kvm_signal_mask)}: the struct is {@code __u32 len} and a flexible array. */
    public static final long KVM_SET_SIGNAL_MASK = Ioctl.iow(KvmUapi.KVMIO, 0x8b, MemoryLayout.structLayout(JAVA_INT));

    /** {@code struct kvm_xsave}: 4 KiB, the legacy FXSAVE area (x87, SSE) first, then the XSAVE header and components. */
    public static final MemoryLayout XSAVE = MemoryLayout.sequenceLayout(4096, JAVA_BYTE);
    public static final long KVM_GET_XSAVE = Ioctl.ior(KvmUapi.KVMIO, 0xa4, XSAVE);
    public static final long KVM_SET_XSAVE = Ioctl.iow(KvmUapi.KVMIO, 0xa5, XSAVE);
    /** {@code struct kvm_vcpu_events}: pending exception, interrupt, NMI, SMM and their flags, 64 bytes. */
    public static final MemoryLayout EVENTS = MemoryLayout.sequenceLayout(64, JAVA_BYTE);
    public static final long KVM_GET_VCPU_EVENTS = Ioctl.ior(KvmUapi.KVMIO, 0x9f, EVENTS);
    public static final long KVM_SET_VCPU_EVENTS = Ioctl.iow(KvmUapi.KVMIO, 0xa0, EVENTS);
    /** {@code struct kvm_msrs}: {@code __u32 nmsrs, pad}, then entries of {@code __u32 index, reserved; __u64 data}. */
    public static final StructLayout MSRS_HEADER = MemoryLayout.structLayout(JAVA_INT.withName("nmsrs"), JAVA_INT.withName("pad"));
    public static final long KVM_GET_MSRS = Ioctl.iowr(KvmUapi.KVMIO, 0x88, MSRS_HEADER);
    public static final long KVM_SET_MSRS = Ioctl.iow(KvmUapi.KVMIO, 0x89, MSRS_HEADER);

    /** {@code struct kvm_run}: offset of {@code immediate_exit} (u8). */
    public static final long RUN_IMMEDIATE_EXIT = 1;
    /** {@code struct kvm_run}: offset of {@code exit_reason} (u32). */
    public static final long RUN_EXIT_REASON = 8;
    /** {@code struct kvm_run}: offset of the union that describes the exit. */
    public static final long RUN_EXIT_UNION = 32;

    private KvmVcpuUapi() {
    }
}
