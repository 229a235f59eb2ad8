package dev.guestmemfd.kvm;

import static dev.guestmemfd.linux.KvmVcpuUapi.RUN_EXIT_UNION;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import dev.guestmemfd.linux.Errno;
import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.Ioctl;
import dev.guestmemfd.linux.KvmUapi;
import dev.guestmemfd.linux.KvmVcpuUapi;
import dev.guestmemfd.linux.LinuxException;
import dev.guestmemfd.linux.Mman;
import dev.guestmemfd.linux.Signals;
import java.lang.foreign.Arena;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;

/**
 * A virtual CPU: its registers, {@code KVM_RUN}, and the shared {@code kvm_run} area that
 * says why the guest stopped.
 *
 * <p>{@link #run()} runs in the calling thread, which must be a platform thread; any such
 * thread may run the vCPU, one at a time, and may end as soon as {@code run()} returned.
 * {@link #kick()} from any thread makes {@code KVM_RUN} return at once (or the next one, if
 * no thread is in it) with {@link VmExit.Interrupted}, and no signal handler ever runs in the
 * JVM.
 *
 * <p>The kick signal's default action ends the process, so it must only ever reach a thread
 * that blocks it. A thread is the kick's target only within {@code run()}: it blocks the
 * signal first (at every call: the kernel saves the mask it finds at {@code KVM_RUN}'s entry
 * and restores it on return, and a signal sent while neither that mask nor the current one
 * blocks it takes the whole process down at once), and on its way out it stops being the
 * target and clears every kick queued for it (the signal is real-time: kicks queue, one
 * each), under the lock {@code kick()} signals under. Outside {@code run()} a kick only sets
 * {@code immediate_exit}, which ends the next {@code KVM_RUN} at its entry.
 *
 * @implSpec {@link #kick()} and {@link #close()} are thread safe; everything else belongs to
 *           the thread running the vCPU.
 */
public final class Vcpu implements AutoCloseable {
    private final int id;
    private final int fd;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment run;
    /** The kernel id of the thread inside {@link #run()}, 0 when none; guarded by this. */
    private int threadId;
    /** A kick signal was sent to {@link #threadId} during this run; guarded by this. */
    private boolean signalled;
    private volatile boolean closed;

    Vcpu(int id, int fd, int mmapSize) {
        this.id = id;
        this.fd = fd;
        try {
            this.run = Mman.mmap(arena, mmapSize, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            // Inside KVM_RUN nothing is blocked, so a pending kick ends it with EINTR.
            try (Arena a = Arena.ofConfined()) {
                MemorySegment mask = a.allocate(4 + Signals.KERNEL_SIGSET_BYTES, 8);
                mask.fill((byte) 0);
                mask.set(JAVA_INT, 0, Signals.KERNEL_SIGSET_BYTES);
                ioctl("KVM_SET_SIGNAL_MASK", KvmVcpuUapi.KVM_SET_SIGNAL_MASK, mask);
            }
        } catch (RuntimeException e) {
            arena.close();
            Fd.close(fd);
            throw e;
        }
    }

    /** {@return the vCPU id} */
    public int id() {
        return id;
    }

    /** {@return the general-purpose registers} */
    public Registers registers() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(Registers.LAYOUT);
            ioctl("KVM_GET_REGS", KvmVcpuUapi.KVM_GET_REGS, s);
            return Registers.from(s);
        }
    }

    /** Sets the general-purpose registers. */
    public void setRegisters(Registers registers) {
        try (Arena a = Arena.ofConfined()) {
            ioctl("KVM_SET_REGS", KvmVcpuUapi.KVM_SET_REGS, registers.toSegment(a));
        }
    }

    /** {@return the special registers} */
    public SpecialRegisters specialRegisters() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(SpecialRegisters.LAYOUT);
            ioctl("KVM_GET_SREGS", KvmVcpuUapi.KVM_GET_SREGS, s);
            return SpecialRegisters.from(s);
        }
    }

    /** Sets the special registers. */
    public void setSpecialRegisters(SpecialRegisters registers) {
        try (Arena a = Arena.ofConfined()) {
            ioctl("KVM_SET_SREGS", KvmVcpuUapi.KVM_SET_SREGS, registers.toSegment(a));
        }
    }

    /** {@return the FPU, SSE and AVX state ({@code KVM_GET_XSAVE}), 4096 bytes} */
    public byte[] xsave() {
        return getBytes("KVM_GET_XSAVE", KvmVcpuUapi.KVM_GET_XSAVE, KvmVcpuUapi.XSAVE);
    }

    /** Sets the FPU, SSE and AVX state from bytes {@link #xsave()} returned. */
    public void setXsave(byte[] state) {
        setBytes("KVM_SET_XSAVE", KvmVcpuUapi.KVM_SET_XSAVE, KvmVcpuUapi.XSAVE, state);
    }

    /** {@return the pending exception, interrupt and NMI state ({@code KVM_GET_VCPU_EVENTS}), 64 bytes} */
    public byte[] events() {
        return getBytes("KVM_GET_VCPU_EVENTS", KvmVcpuUapi.KVM_GET_VCPU_EVENTS, KvmVcpuUapi.EVENTS);
    }

    /** Sets the pending event state from bytes {@link #events()} returned. */
    public void setEvents(byte[] state) {
        setBytes("KVM_SET_VCPU_EVENTS", KvmVcpuUapi.KVM_SET_VCPU_EVENTS, KvmVcpuUapi.EVENTS, state);
    }

    /**
     * {@return the MSRs of {@code indexes} that KVM reads, in order} KVM stops at the first
     * one it refuses, so the list holds a prefix of {@code indexes}.
     */
    public java.util.List<Msr> msrs(int... indexes) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(8 + 16L * indexes.length, 8);
            s.set(JAVA_INT, 0, indexes.length);
            for (int i = 0; i < indexes.length; i++) {
                s.set(JAVA_INT, 8 + 16L * i, indexes[i]);
            }
            int read = ioctlCount("KVM_GET_MSRS", KvmVcpuUapi.KVM_GET_MSRS, s);
            java.util.List<Msr> msrs = new java.util.ArrayList<>();
            for (int i = 0; i < read; i++) {
                msrs.add(new Msr(s.get(JAVA_INT, 8 + 16L * i), s.get(JAVA_LONG, 16 + 16L * i)));
            }
            return msrs;
        }
    }

    /**
     * Sets MSRs.
     *
     * @throws KvmException {@code EINVAL} naming the first MSR KVM refused; the ones before it are set
     */
    public void setMsrs(java.util.List<Msr> msrs) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(8 + 16L * msrs.size(), 8);
            s.set(JAVA_INT, 0, msrs.size());
            for (int i = 0; i < msrs.size(); i++) {
                s.set(JAVA_INT, 8 + 16L * i, msrs.get(i).index());
                s.set(JAVA_LONG, 16 + 16L * i, msrs.get(i).value());
            }
            int written = ioctlCount("KVM_SET_MSRS", KvmVcpuUapi.KVM_SET_MSRS, s);
            if (written != msrs.size()) {
                throw new KvmException("KVM_SET_MSRS on vCPU " + id, dev.guestmemfd.Errno.EINVAL,
                        "KVM refused MSR 0x" + Integer.toHexString(msrs.get(written).index()));
            }
        }
    }

    private byte[] getBytes(String what, long request, MemoryLayout layout) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(layout);
            ioctl(what, request, s);
            return s.toArray(JAVA_BYTE);
        }
    }

    private void setBytes(String what, long request, MemoryLayout layout, byte[] state) {
        if (state.length != layout.byteSize()) {
            throw new IllegalArgumentException(what + " takes " + layout.byteSize() + " bytes, not " + state.length);
        }
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(layout);
            s.copyFrom(MemorySegment.ofArray(state));
            ioctl(what, request, s);
        }
    }

    /**
     * Runs the guest until it exits to user space, in the calling (platform) thread.
     *
     * @return the exit, decoded; {@link VmExit.MemoryFault} when {@code KVM_RUN} failed with
     *         {@code EFAULT} and a memory-fault exit, {@link VmExit.Interrupted} after a kick
     * @throws KvmException {@code EBADF} when the vCPU is closed, {@code EBUSY} when another
     *                      thread is running it, or when {@code KVM_RUN} fails otherwise
     */
    public VmExit run() {
        // Every time, not once per thread: whatever changed this thread's mask since (the JVM
        // restores a thread's original mask as it ends, and another caller may have changed it),
        // KVM_RUN must find the kick blocked, or a kick during it ends the process.
        Signals.mask(Signals.SIG_BLOCK, Signals.KICK);
        enter(Signals.gettid());
        int rc = 0;
        try {
            rc = Ioctl.ioctlOrErrno(fd, KvmUapi.KVM_RUN, 0);
        } finally {
            leave(rc == -Errno.EINTR.number());
        }
        int reason = run.get(JAVA_INT, KvmVcpuUapi.RUN_EXIT_REASON);
        if (rc < 0) {
            int errno = -rc;
            if (errno == Errno.EINTR.number()) {
                return new VmExit.Interrupted();
            }
            if (errno == Errno.EFAULT.number() && reason == VmExit.KVM_EXIT_MEMORY_FAULT) {
                return new VmExit.MemoryFault(run.get(JAVA_LONG, RUN_EXIT_UNION), run.get(JAVA_LONG, RUN_EXIT_UNION + 8),
                        run.get(JAVA_LONG, RUN_EXIT_UNION + 16));
            }
            throw new KvmException("KVM_RUN on vCPU " + id, dev.guestmemfd.Errno.of(errno), "the kernel refused to run the vCPU");
        }
        return decode(reason);
    }

    private VmExit decode(int reason) {
        return switch (reason) {
            case VmExit.KVM_EXIT_IO -> {
                boolean out = run.get(JAVA_BYTE, RUN_EXIT_UNION) == 1;
                int size = run.get(JAVA_BYTE, RUN_EXIT_UNION + 1);
                int port = Short.toUnsignedInt(run.get(JAVA_SHORT, RUN_EXIT_UNION + 2));
                int count = run.get(JAVA_INT, RUN_EXIT_UNION + 4);
                long dataOffset = run.get(JAVA_LONG, RUN_EXIT_UNION + 8);
                long data = 0;
                if (out) {
                    for (int i = size - 1; i >= 0; i--) {
                        data = data << 8 | Byte.toUnsignedLong(run.get(JAVA_BYTE, dataOffset + i));
                    }
                }
                yield new VmExit.Io(out, port, size, count, data);
            }
            case VmExit.KVM_EXIT_MMIO -> new VmExit.Mmio(run.get(JAVA_LONG, RUN_EXIT_UNION), run.get(JAVA_BYTE, RUN_EXIT_UNION + 20) != 0,
                    run.get(JAVA_INT, RUN_EXIT_UNION + 16), run.get(JAVA_LONG, RUN_EXIT_UNION + 8));
            case VmExit.KVM_EXIT_HLT -> new VmExit.Halt();
            case VmExit.KVM_EXIT_SHUTDOWN -> new VmExit.Shutdown();
            case VmExit.KVM_EXIT_HYPERCALL -> new VmExit.Hypercall(run.get(JAVA_LONG, RUN_EXIT_UNION), run.get(JAVA_LONG, RUN_EXIT_UNION + 8),
                    run.get(JAVA_LONG, RUN_EXIT_UNION + 16), run.get(JAVA_LONG, RUN_EXIT_UNION + 24), run.get(JAVA_LONG, RUN_EXIT_UNION + 32));
            case VmExit.KVM_EXIT_FAIL_ENTRY -> new VmExit.FailEntry(run.get(JAVA_LONG, RUN_EXIT_UNION), run.get(JAVA_INT, RUN_EXIT_UNION + 8));
            case VmExit.KVM_EXIT_INTERNAL_ERROR -> new VmExit.InternalError(run.get(JAVA_INT, RUN_EXIT_UNION));
            case VmExit.KVM_EXIT_SYSTEM_EVENT -> new VmExit.SystemEvent(run.get(JAVA_INT, RUN_EXIT_UNION));
            case VmExit.KVM_EXIT_INTR -> new VmExit.Interrupted();
            default -> new VmExit.Other(reason);
        };
    }

    /** Answers the guest's pending {@code in}: the value it reads when {@code KVM_RUN} resumes. */
    public void completeIn(long value) {
        int size = run.get(JAVA_BYTE, RUN_EXIT_UNION + 1);
        long dataOffset = run.get(JAVA_LONG, RUN_EXIT_UNION + 8);
        for (int i = 0; i < size; i++) {
            run.set(JAVA_BYTE, dataOffset + i, (byte) (value >>> (8 * i)));
        }
    }

    /** Sets the return value of a hypercall exit before resuming. */
    public void completeHypercall(long value) {
        run.set(JAVA_LONG, RUN_EXIT_UNION + 56, value);
    }

    /**
     * Makes the vCPU's {@code KVM_RUN} return with {@link VmExit.Interrupted} as soon as
     * possible: now if it is running, else on its next entry.
     */
    public synchronized void kick() {
        if (closed) {
            return;
        }
        run.set(JAVA_BYTE, KvmVcpuUapi.RUN_IMMEDIATE_EXIT, (byte) 1);
        // Under the lock the target is inside run(), blocking the signal, and cannot leave
        // (and end, and have its id reused) before the signal is queued. One signal per run
        // is enough: while it is pending, KVM_RUN cannot stay in (nor enter) the guest.
        if (threadId != 0 && !signalled) {
            Signals.tgkill(threadId, Signals.KICK);
            signalled = true;
        }
    }

    /** Makes the calling thread, which blocks the kick signal, the target of kicks. */
    private synchronized void enter(int tid) {
        if (closed) {
            throw new KvmException("KVM_RUN on vCPU " + id, dev.guestmemfd.Errno.EBADF, "the vCPU is closed");
        }
        if (threadId != 0) {
            throw new KvmException("KVM_RUN on vCPU " + id, dev.guestmemfd.Errno.EBUSY,
                    "thread " + threadId + " is running the vCPU");
        }
        threadId = tid;
    }

    /**
     * Ends the calling thread's time as the kick's target and clears the kicks sent to it, so
     * that none is left pending when the thread's mask changes or the thread ends.
     *
     * @param interrupted {@code KVM_RUN} returned {@code EINTR}: the kick it answered is spent
     */
    private synchronized void leave(boolean interrupted) {
        threadId = 0;
        // EINTR alone also drains: a signal 40 from elsewhere would otherwise end every run.
        if (signalled || interrupted) {
            signalled = false;
            while (Signals.consume(Signals.KICK)) {
                // one queued signal per turn
            }
        }
        if (interrupted && !closed) {
            run.set(JAVA_BYTE, KvmVcpuUapi.RUN_IMMEDIATE_EXIT, (byte) 0);
        }
    }

    private void ioctl(String what, long request, MemorySegment argument) {
        ioctlCount(what, request, argument);
    }

    private int ioctlCount(String what, long request, MemorySegment argument) {
        try {
            return Ioctl.ioctl(fd, request, argument);
        } catch (LinuxException e) {
            throw new KvmException(what + " on vCPU " + id, e);
        }
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        arena.close();
        Fd.close(fd);
    }
}
