package dev.guestmemfd.kvm;

/** Why {@code KVM_RUN} returned: the decoded {@code kvm_run.exit_reason} and its data. */
public sealed interface VmExit {
    int KVM_EXIT_UNKNOWN = 0;
    int KVM_EXIT_IO = 2;
    int KVM_EXIT_HYPERCALL = 3;
    int KVM_EXIT_HLT = 5;
    int KVM_EXIT_MMIO = 6;
    int KVM_EXIT_SHUTDOWN = 8;
    int KVM_EXIT_FAIL_ENTRY = 9;
    int KVM_EXIT_INTR = 10;
    int KVM_EXIT_INTERNAL_ERROR = 17;
    int KVM_EXIT_SYSTEM_EVENT = 24;
    int KVM_EXIT_MEMORY_FAULT = 39;

    /**
     * Port I/O. For an {@code out}, {@code data} holds what the guest wrote; for an
     * {@code in}, the handler answers with {@link Vcpu#completeIn}.
     */
    record Io(boolean out, int port, int size, int count, long data) implements VmExit { }

    /** A guest access to guest-physical memory that no memslot backs. */
    record Mmio(long physicalAddress, boolean write, int length, long data) implements VmExit { }

    /** The guest ran {@code hlt}. */
    record Halt() implements VmExit { }

    /** The guest triple-faulted or asked for shutdown. */
    record Shutdown() implements VmExit { }

    /** A hypercall sent to user space ({@code KVM_CAP_EXIT_HYPERCALL}), e.g. {@code KVM_HC_MAP_GPA_RANGE} (12). */
    record Hypercall(long nr, long arg0, long arg1, long arg2, long arg3) implements VmExit {
        /** The hypercall a guest uses to ask for conversion. */
        public static final long KVM_HC_MAP_GPA_RANGE = 12;
    }

    /**
     * The guest touched memory in the wrong state ({@code KVM_RUN} returned -1 with
     * {@code EFAULT}): user space decides, e.g. converts, and runs again.
     */
    record MemoryFault(long flags, long gpa, long size) implements VmExit {
        /** {@code KVM_MEMORY_EXIT_FLAG_PRIVATE}: the guest wanted the page private. */
        public static final long PRIVATE = 1L << 3;
    }

    /** Entry into the guest failed: the hardware's reason. */
    record FailEntry(long reason, int cpu) implements VmExit { }

    /** KVM could not handle an exit ({@code KVM_EXIT_INTERNAL_ERROR}). */
    record InternalError(int suberror) implements VmExit { }

    /** {@code KVM_RUN} was interrupted by a kick ({@code EINTR} / {@code KVM_EXIT_INTR}). */
    record Interrupted() implements VmExit { }

    /** A system event (reset, shutdown, crash) from the guest. */
    record SystemEvent(int type) implements VmExit { }

    /** An exit this library does not decode. */
    record Other(int reason) implements VmExit { }
}
