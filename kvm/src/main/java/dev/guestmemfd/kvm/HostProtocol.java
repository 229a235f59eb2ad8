package dev.guestmemfd.kvm;

import static dev.guestmemfd.kvm.Machine.CMD_CONVERT;
import static dev.guestmemfd.kvm.Machine.CMD_HOST_CHECK;
import static dev.guestmemfd.kvm.Machine.CMD_HOST_DENIED;
import static dev.guestmemfd.kvm.Machine.CMD_HOST_READ;
import static dev.guestmemfd.kvm.Machine.CMD_HOST_WRITE;
import static dev.guestmemfd.kvm.Machine.CMD_PUNCH;
import static dev.guestmemfd.kvm.Machine.HOST_SAW_OTHER_DATA;
import static dev.guestmemfd.kvm.Machine.HOST_WAS_NOT_REFUSED;
import static dev.guestmemfd.kvm.Machine.HOST_WAS_REFUSED;
import static dev.guestmemfd.kvm.Machine.MAP_GPA_RANGE_ENCRYPTED;
import static dev.guestmemfd.kvm.Machine.PORT_DOORBELL;
import static dev.guestmemfd.kvm.Machine.PORT_FAIL;
import static dev.guestmemfd.kvm.Machine.PORT_RESULT;
import static dev.guestmemfd.kvm.Machine.PORT_SERIAL;
import static dev.guestmemfd.kvm.Machine.PORT_TICK;
import static dev.guestmemfd.kvm.Machine.UNKNOWN_COMMAND;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Content;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostAccessFault;
import dev.guestmemfd.HostMapping;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The host side of the guest protocol ({@code docs/GUEST-PROTOCOL.md}): what the host does at
 * each exit of a vCPU of a {@link Machine}. It prints the serial port and the counter's ticks,
 * serves doorbell requests (convert, punch, and the host's checks of what it can and cannot
 * see) and the {@code KVM_HC_MAP_GPA_RANGE} hypercall, and tells how a vCPU ended.
 *
 * @implSpec Called from every vCPU thread at once: the serial output, the denial count and the
 * host reads are thread safe.
 */
final class HostProtocol {
    private final GuestMemory memory;
    private final HostMapping host;
    private final boolean preallocate;
    private final int vcpuCount;
    private final StringBuffer serial = new StringBuffer();
    private final AtomicLong hostDenials = new AtomicLong();
    private final List<String> hostReads = new CopyOnWriteArrayList<>();
    private volatile Machine.Listener listener = (vcpu, command, gpa, bytes, answer) -> { };

    /**
     * @param memory      the guest's memory
     * @param host        the host's mapping of all of it
     * @param preallocate allocate a range when the guest converts it to private
     * @param vcpuCount   how many vCPUs count ticks
     */
    HostProtocol(GuestMemory memory, HostMapping host, boolean preallocate, int vcpuCount) {
        this.memory = memory;
        this.host = host;
        this.preallocate = preallocate;
        this.vcpuCount = vcpuCount;
    }

    /** {@return what the guest printed so far} */
    String serial() {
        return serial.toString();
    }

    /** {@return host reads of private pages that the library refused} */
    long hostDenials() {
        return hostDenials.get();
    }

    /** {@return what the host read when the guest asked it to (command 6)} */
    List<String> hostReads() {
        return List.copyOf(hostReads);
    }

    /** Sets who hears the doorbell requests. */
    void listen(Machine.Listener l) {
        listener = l;
    }

    /**
     * Serves one exit of {@code vcpu}. {@return null when the vCPU is to run on, else how it ended}
     *
     * @param stopping whether the machine is pausing: an interrupted run then ends as a timeout
     */
    Machine.VcpuOutcome serve(Vcpu vcpu, VmExit exit, boolean stopping) {
        switch (exit) {
            case VmExit.Io io when io.port() == PORT_SERIAL && io.out() -> serial.append((char) (io.data() & 0xff));
            case VmExit.Io io when io.port() == PORT_TICK && io.out() ->
                    // With several vCPUs each counts on its own: say whose tick it is.
                    serial.append(String.format(java.util.Locale.ROOT, vcpuCount > 1 ? "vcpu %2$d tick %1$08x%n" : "tick %08x%n",
                            io.data(), vcpu.id()));
            case VmExit.Io io when io.port() == PORT_DOORBELL && !io.out() -> {
                Registers r = vcpu.registers();
                long answer = doorbell(r);
                vcpu.completeIn(answer);
                listener.served(vcpu.id(), (int) r.r10(), r.rdi(), r.rsi(), answer);
            }
            case VmExit.Io io when io.port() == PORT_RESULT && io.out() -> {
                return new Machine.VcpuOutcome(vcpu.id(), "result", vcpu.registers().rax(), exit);
            }
            case VmExit.Io io when io.port() == PORT_FAIL && io.out() -> {
                return new Machine.VcpuOutcome(vcpu.id(), "failed", io.data(), exit);
            }
            case VmExit.Io io -> {
                return new Machine.VcpuOutcome(vcpu.id(), "unexpected port 0x" + Integer.toHexString(io.port()), 0, exit);
            }
            case VmExit.Hypercall call when call.nr() == VmExit.Hypercall.KVM_HC_MAP_GPA_RANGE ->
                    vcpu.completeHypercall(convert(call.arg0(), call.arg1() * GuestMemory.PAGE_SIZE,
                            (call.arg2() & MAP_GPA_RANGE_ENCRYPTED) != 0, false));
            case VmExit.Halt h -> {
                return new Machine.VcpuOutcome(vcpu.id(), "halted", 0, exit);
            }
            case VmExit.Interrupted i -> {
                if (stopping) {
                    return new Machine.VcpuOutcome(vcpu.id(), "timeout", 0, exit);
                }
            }
            default -> {
                return new Machine.VcpuOutcome(vcpu.id(), exit.getClass().getSimpleName(), 0, exit);
            }
        }
        return null;
    }

    /** Serves one doorbell request; the answer is what the guest's {@code in} reads. */
    private long doorbell(Registers r) {
        long gpa = r.rdi();
        long bytes = r.rsi();
        return switch ((int) r.r10()) {
            case CMD_CONVERT -> convert(gpa, bytes, r.r8() == 1, r.r9() == 1);
            case CMD_PUNCH -> guarded(() -> memory.punchHole(gpa, bytes));
            case CMD_HOST_CHECK -> hostCheck(gpa, bytes, (byte) r.r8());
            case CMD_HOST_DENIED -> hostDenied(gpa, bytes);
            case CMD_HOST_READ -> {
                try {
                    hostReads.add(new String(host.read(gpa, (int) bytes), java.nio.charset.StandardCharsets.US_ASCII));
                    yield 0;
                } catch (HostAccessFault fault) {
                    yield HOST_WAS_REFUSED;
                }
            }
            case CMD_HOST_WRITE -> {
                byte[] data = new byte[(int) bytes];
                Arrays.fill(data, (byte) r.r8());
                try {
                    host.write(gpa, data);
                    yield 0;
                } catch (HostAccessFault fault) {
                    yield HOST_WAS_REFUSED;
                }
            }
            default -> UNKNOWN_COMMAND;
        };
    }

    private long convert(long gpa, long bytes, boolean toPrivate, boolean preserve) {
        return guarded(() -> {
            if (toPrivate && preallocate) {
                memory.allocate(gpa, bytes);
            }
            // ZERO is towards shared only (the kernel's rule): the zeros this protocol promises
            // towards private come from punching the pages that became the guest's, once they
            // are, as a CoCo firmware scrubs them; a refused conversion punches nothing.
            List<long[]> scrub = toPrivate && !preserve ? sharedRuns(gpa, bytes) : List.of();
            memory.convert(gpa, bytes, toPrivate ? Attribute.PRIVATE : Attribute.SHARED,
                    preserve ? Content.PRESERVE : toPrivate ? Content.UNSPECIFIED : Content.ZERO);
            for (long[] run : scrub) {
                memory.punchHole(run[0], run[1]);
                if (preallocate) {
                    memory.allocate(run[0], run[1]);
                }
            }
        });
    }

    /** {@return the runs of shared pages in the range, as {offset, length}; none for a range outside the file} */
    private List<long[]> sharedRuns(long gpa, long bytes) {
        List<long[]> runs = new ArrayList<>();
        if (gpa < 0 || bytes <= 0 || gpa % GuestMemory.PAGE_SIZE != 0 || bytes % GuestMemory.PAGE_SIZE != 0
                || gpa > memory.size() || bytes > memory.size() - gpa) {
            return runs;  // the conversion refuses it
        }
        for (long at = gpa; at < gpa + bytes; at += GuestMemory.PAGE_SIZE) {
            if (memory.attribute(at) == Attribute.SHARED) {
                if (!runs.isEmpty() && runs.getLast()[0] + runs.getLast()[1] == at) {
                    runs.getLast()[1] += GuestMemory.PAGE_SIZE;
                } else {
                    runs.add(new long[] {at, GuestMemory.PAGE_SIZE});
                }
            }
        }
        return runs;
    }

    private static long guarded(Runnable action) {
        try {
            action.run();
            return 0;
        } catch (GuestMemoryException e) {
            return e.errno().number();
        }
    }

    private long hostCheck(long gpa, long bytes, byte expected) {
        try {
            byte[] seen = host.read(gpa, (int) bytes);
            for (byte b : seen) {
                if (b != expected) {
                    return HOST_SAW_OTHER_DATA;
                }
            }
            return 0;
        } catch (HostAccessFault fault) {
            return HOST_WAS_REFUSED;
        }
    }

    /** The host tries to read every page of the range, and to lease it; every try must be refused. */
    private long hostDenied(long gpa, long bytes) {
        for (long page = gpa; page < gpa + bytes; page += GuestMemory.PAGE_SIZE) {
            try {
                host.read(page, 8);
                return HOST_WAS_NOT_REFUSED;
            } catch (HostAccessFault expected) {
                hostDenials.incrementAndGet();
            }
            try {
                host.lease(page, GuestMemory.PAGE_SIZE).close();
                return HOST_WAS_NOT_REFUSED;
            } catch (HostAccessFault expected) {
                hostDenials.incrementAndGet();
            }
        }
        return 0;
    }
}
