package dev.guestmemfd.kvm;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import dev.guestmemfd.Backing;

/**
 * What travels of a machine besides its pages, as the owner state records of its snapshot
 * stream: the description (from which the receiver builds the VM) and each vCPU's state.
 */
final class MachineImage {
    private MachineImage() {
    }

    /**
     * {@return the machine's description: u64 memory size, UTF backing, UTF program, u32 vCPUs,
     * then u8 preallocate and u8 hypercalls (how the host serves the guest's requests)}
     */
    static byte[] describe(Machine.Config config) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        DataOutputStream out = new DataOutputStream(bytes);
        out.writeLong(config.memorySize());
        out.writeUTF(config.backing().name());
        out.writeUTF(config.program().name());
        out.writeInt(config.vcpus());
        out.writeBoolean(config.preallocate());
        out.writeBoolean(config.hypercalls());
        return bytes.toByteArray();
    }

    /** {@return the configuration a description written by {@link #describe} names} */
    static Machine.Config config(byte[] description) throws IOException {
        DataInputStream in = new DataInputStream(new ByteArrayInputStream(description));
        long memorySize = in.readLong();
        Backing backing = Backing.valueOf(in.readUTF());
        GuestProgram program = GuestProgram.valueOf(in.readUTF());
        int vcpus = in.readInt();
        boolean preallocate = in.readBoolean();
        boolean hypercalls = in.readBoolean();
        return Machine.Config.of(program, backing, vcpus).withMemorySize(memorySize)
                .withPreallocate(preallocate).withHypercalls(hypercalls);
    }

    /**
     * {@return each vCPU's state: u32 count, then per vCPU its {@code kvm_regs} (144 bytes),
     * {@code kvm_sregs} (312), XSAVE area (4096: x87, SSE, AVX), {@code kvm_vcpu_events} (64),
     * u32 MSR count and per MSR u32 index and u64 value ({@link Msr#MIGRATED}, as many as KVM
     * reads)} Not carried: the local APIC (these VMs have no in-kernel irqchip), debug
     * registers, XCRs and nested state.
     */
    static byte[] vcpuState(Machine machine) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        DataOutputStream out = new DataOutputStream(bytes);
        List<Vcpu> vcpus = machine.vcpus();
        out.writeInt(vcpus.size());
        try (Arena arena = Arena.ofConfined()) {
            for (Vcpu vcpu : vcpus) {
                out.write(vcpu.registers().toSegment(arena).toArray(ValueLayout.JAVA_BYTE));
                out.write(vcpu.specialRegisters().toSegment(arena).toArray(ValueLayout.JAVA_BYTE));
                out.write(vcpu.xsave());
                out.write(vcpu.events());
                List<Msr> msrs = vcpu.msrs(Msr.MIGRATED);
                out.writeInt(msrs.size());
                for (Msr msr : msrs) {
                    out.writeInt(msr.index());
                    out.writeLong(msr.value());
                }
            }
        }
        return bytes.toByteArray();
    }

    /** Sets each vCPU of {@code machine} from a state written by {@link #vcpuState}. */
    static void restoreVcpus(Machine machine, byte[] state) {
        try {
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(state));
            List<Vcpu> vcpus = machine.vcpus();
            if (in.readInt() != vcpus.size()) {
                throw new IOException("the vCPU state is for another number of vCPUs");
            }
            try (Arena arena = Arena.ofConfined()) {
                for (Vcpu vcpu : vcpus) {
                    byte[] regs = read(in, Registers.LAYOUT.byteSize());
                    byte[] sregs = read(in, SpecialRegisters.LAYOUT.byteSize());
                    byte[] xsave = read(in, dev.guestmemfd.linux.KvmVcpuUapi.XSAVE.byteSize());
                    byte[] events = read(in, dev.guestmemfd.linux.KvmVcpuUapi.EVENTS.byteSize());
                    int count = in.readInt();
                    if (count < 0 || count > Msr.MIGRATED.length) {
                        throw new IOException("the vCPU state holds " + count + " MSRs");
                    }
                    List<Msr> msrs = new ArrayList<>();
                    for (int i = 0; i < count; i++) {
                        msrs.add(new Msr(in.readInt(), in.readLong()));
                    }
                    // As QEMU orders it: registers and segments, then MSRs, FPU state, events.
                    vcpu.setSpecialRegisters(SpecialRegisters.from(copy(arena, sregs)));
                    vcpu.setRegisters(Registers.from(copy(arena, regs)));
                    vcpu.setMsrs(msrs);
                    vcpu.setXsave(xsave);
                    vcpu.setEvents(events);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static byte[] read(DataInputStream in, long bytes) throws IOException {
        byte[] b = new byte[(int) bytes];
        in.readFully(b);
        return b;
    }

    private static MemorySegment copy(Arena arena, byte[] bytes) {
        MemorySegment s = arena.allocate(bytes.length, 8);
        MemorySegment.copy(MemorySegment.ofArray(bytes), 0, s, 0, bytes.length);
        return s;
    }
}
