package dev.guestmemfd.kvm;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostAccessFault;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.LaunchDigest;
import dev.guestmemfd.linux.KvmUapi;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A small virtual machine for this project's guest programs: a VM whose RAM is one guest
 * memory file bound through two memslots, the program loaded and measured into private
 * memory, one platform thread per vCPU, and the host side of the guest's requests.
 *
 * <p>The guest asks for conversions through a port-I/O doorbell (documented in
 * {@code docs/GUEST-PROTOCOL.md}) or, where the host passes it through, the hypercall
 * {@code KVM_HC_MAP_GPA_RANGE}.
 */
public final class Machine implements AutoCloseable {
    public static final int PORT_SERIAL = 0x3f8;
    public static final int PORT_DOORBELL = 0x510;
    public static final int PORT_RESULT = 0x511;
    public static final int PORT_FAIL = 0x512;
    /**
     * The counter guest's tick: printed on the serial output as {@code tick XXXXXXXX}, or
     * {@code vcpu N tick XXXXXXXX} on a machine of several vCPUs.
     */
    public static final int PORT_TICK = 0x513;

    public static final int CMD_CONVERT = 1;
    public static final int CMD_PUNCH = 2;
    public static final int CMD_HOST_CHECK = 3;
    public static final int CMD_HOST_DENIED = 4;
    public static final int CMD_HOST_WRITE = 5;
    public static final int CMD_HOST_READ = 6;

    /** Hears every doorbell request after the host served it. */
    public interface Listener {
        /**
         * @param vcpu    the vCPU that asked
         * @param command the {@code CMD_*} number
         * @param gpa     the guest-physical address (= file offset)
         * @param bytes   the length
         * @param answer  what the guest reads back: 0 for done
         */
        void served(int vcpu, int command, long gpa, long bytes, long answer);
    }

    /** Doorbell answers besides 0 (done) and an errno number (refused). */
    public static final int HOST_SAW_OTHER_DATA = 1000;
    public static final int HOST_WAS_REFUSED = 1001;
    public static final int HOST_WAS_NOT_REFUSED = 1002;
    public static final int UNKNOWN_COMMAND = 1003;

    /** {@code KVM_MAP_GPA_RANGE_ENCRYPTED}: the hypercall asks for private pages. */
    public static final long MAP_GPA_RANGE_ENCRYPTED = 1L << 4;

    /** Where the code, page tables and stacks live: private from the start. */
    private static final long LOW_PRIVATE = GuestLayout.STACK_TOP;
    /** The first memslot covers the low 2 MiB, the second the rest: one file, two slots. */
    private static final long FIRST_SLOT = 2L << 20;

    /**
     * How to build the machine.
     *
     * @param backing     where the guest's memory comes from
     * @param memorySize  bytes of guest RAM
     * @param vcpus       number of vCPUs, each with its own thread and region
     * @param program     the guest program
     * @param preallocate allocate a range when the guest converts it to private, as the
     *                    kernel's test does with fallocate; else pages are allocated on touch
     * @param hypercalls  ask KVM to pass {@code KVM_HC_MAP_GPA_RANGE} to user space
     */
    public record Config(Backing backing, long memorySize, int vcpus, GuestProgram program, boolean preallocate,
                         boolean hypercalls) {
        /** {@return a configuration for {@code program} with {@code vcpus} regions} */
        public static Config of(GuestProgram program, Backing backing, int vcpus) {
            return new Config(backing, GuestLayout.memoryFor(vcpus), vcpus, program, false, false);
        }

        public Config withPreallocate(boolean on) {
            return new Config(backing, memorySize, vcpus, program, on, hypercalls);
        }

        public Config withMemorySize(long bytes) {
            return new Config(backing, bytes, vcpus, program, preallocate, hypercalls);
        }

        public Config withHypercalls(boolean on) {
            return new Config(backing, memorySize, vcpus, program, preallocate, on);
        }
    }

    /**
     * How one vCPU ended.
     *
     * @param id     the vCPU
     * @param how    {@code result} (port 0x511), {@code failed} (port 0x512), {@code halted},
     *               {@code timeout}, or the name of the exit that stopped it
     * @param value  the result or failure code
     * @param exit   the last exit
     */
    public record VcpuOutcome(int id, String how, long value, VmExit exit) { }

    /**
     * What a run did.
     *
     * @param serial      what the guest printed on the serial port
     * @param vcpus       how each vCPU ended
     * @param hostDenials host reads of private pages that the library refused
     */
    public record Outcome(String serial, List<VcpuOutcome> vcpus, long hostDenials) {
        /** {@return true when every vCPU reported a result (not a failure, not a timeout)} */
        public boolean allSucceeded() {
            return vcpus.stream().allMatch(v -> v.how().equals("result") && v.value() == 0);
        }
    }

    private final Config config;
    private final Vm vm;
    private final GuestMemory memory;
    private final List<Memslot> memslots = new ArrayList<>();
    private final HostMapping host;
    private final List<Vcpu> vcpus = new ArrayList<>();
    private final LaunchDigest digest = new LaunchDigest();
    private final StringBuffer serial = new StringBuffer();
    private final AtomicLong hostDenials = new AtomicLong();
    private final List<String> hostReads = new java.util.concurrent.CopyOnWriteArrayList<>();
    private volatile Listener listener = (vcpu, command, gpa, bytes, answer) -> { };
    private volatile boolean stopping;

    private Machine(Kvm kvm, Config config) {
        this(kvm, config, false);
    }

    /** @param restoring build the VM and its memory only: a migration fills memory and vCPU state */
    private Machine(Kvm kvm, Config config, boolean restoring) {
        this.config = config;
        this.vm = kvm.createVm();
        try {
            vm.setTssAddress(Vm.TSS_ADDRESS);
            long flags = Flag.MMAP.bit() | Flag.INIT_SHARED.bit()
                    | (config.backing() == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
            this.memory = config.backing() == Backing.KERNEL
                    ? vm.createGuestMemory(config.memorySize(), flags)
                    : GuestMemory.create(config.memorySize(), flags, config.backing());
            memslots.add(vm.bind(memory, 0, 0, 0, FIRST_SLOT, false));
            memslots.add(vm.bind(memory, 1, FIRST_SLOT, FIRST_SLOT, config.memorySize() - FIRST_SLOT, false));
            this.host = memory.map(0, config.memorySize());
            if (config.hypercalls()) {
                vm.enableCapability(KvmUapi.KVM_CAP_EXIT_HYPERCALL, 1L << VmExit.Hypercall.KVM_HC_MAP_GPA_RANGE);
            }
            if (!restoring) {
                load();
            }
            for (int i = 0; i < config.vcpus(); i++) {
                Vcpu vcpu = vm.createVcpu(i);
                if (restoring) {
                    vcpus.add(vcpu);
                    continue;
                }
                vcpu.setSpecialRegisters(vcpu.specialRegisters().longMode(GuestLayout.PML4));
                long rcx = config.program() == GuestProgram.TOUCH_ALL ? config.memorySize()
                        : config.program() == GuestProgram.HYPERCALL ? 1 : GuestLayout.region(i) + GuestLayout.REGION_SIZE;
                vcpu.setRegisters(Registers.start(GuestLayout.CODE, GuestLayout.stackTop(i), GuestLayout.region(i), rcx));
                vcpus.add(vcpu);
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    /**
     * Builds a machine and loads its program; it does not run yet.
     *
     * @throws KvmException         when KVM refuses a step
     * @throws GuestMemoryException when the memory cannot be created or bound
     */
    public static Machine boot(Kvm kvm, Config config) {
        return new Machine(kvm, config);
    }

    /** Builds a machine whose memory and vCPU state a migration will fill; it loads nothing. */
    static Machine bootForRestore(Kvm kvm, Config config) {
        return new Machine(kvm, config, true);
    }

    /** {@return the vCPUs, for migration} */
    List<Vcpu> vcpus() {
        return List.copyOf(vcpus);
    }

    /** {@return the configuration} */
    public Config config() {
        return config;
    }

    /** Loads page tables and program into private memory, measuring them. */
    private void load() {
        memory.convert(0, LOW_PRIVATE, Attribute.PRIVATE, Content.UNSPECIFIED);  // ZERO is towards shared only
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment tables = arena.allocate(GuestLayout.PD + 0x1000);
            GuestLayout.writePageTables(tables);
            memslots.getFirst().binding().populate(GuestLayout.PML4,
                    tables.asSlice(GuestLayout.PML4, 3 * 0x1000), digest);
            byte[] program = config.program().bytes();
            memslots.getFirst().binding().populate(GuestLayout.CODE, MemorySegment.ofArray(program), digest);
        }
    }

    /** {@return the guest's memory} */
    public GuestMemory memory() {
        return memory;
    }

    /** {@return the VM} */
    public Vm vm() {
        return vm;
    }

    /** {@return the host's mapping of all of the guest's memory} */
    public HostMapping hostMapping() {
        return host;
    }

    /** {@return what the guest printed on its serial port so far, also while it runs} */
    public String serial() {
        return serial.toString();
    }

    /** {@return the launch measurement of the page tables and program} */
    public LaunchDigest launchDigest() {
        return digest;
    }

    /** {@return what the host read through its mapping when the guest asked it to (command 6)} */
    public List<String> hostReads() {
        return List.copyOf(hostReads);
    }

    /** Sets who hears the doorbell requests; call before {@link #run}. */
    public void listen(Listener l) {
        this.listener = l;
    }

    /** {@return the memslots} */
    public List<Memslot> memslots() {
        return List.copyOf(memslots);
    }

    /**
     * Runs every vCPU in its own thread until each reports, halts or stops, or until
     * {@code limit} passes (then they are kicked out of {@code KVM_RUN}).
     */
    public Outcome run(Duration limit) throws InterruptedException {
        return start().await(limit);
    }

    /**
     * Starts every vCPU in its own thread and returns at once: the guest runs until
     * {@link Running#pause()} or {@link Running#await}, as a migration needs it to while it
     * copies memory.
     */
    public Running start() {
        return new Running();
    }

    /** A machine whose vCPUs are running. */
    public final class Running {
        private final VcpuOutcome[] outcomes = new VcpuOutcome[vcpus.size()];
        private final List<Thread> threads = new ArrayList<>();

        private Running() {
            for (Vcpu vcpu : vcpus) {
                threads.add(Thread.ofPlatform().name("vcpu-" + vcpu.id()).start(
                        () -> outcomes[vcpu.id()] = runVcpu(vcpu)));
            }
        }

        /** {@return the machine} */
        public Machine machine() {
            return Machine.this;
        }

        /** Waits until every vCPU ends or {@code limit} passes, then pauses the rest. */
        public Outcome await(Duration limit) throws InterruptedException {
            long deadline = System.nanoTime() + limit.toNanos();
            for (Thread t : threads) {
                long left = deadline - System.nanoTime();
                if (left > 0) {
                    t.join(Duration.ofNanos(left));
                }
            }
            return pause();
        }

        /**
         * Kicks every vCPU out of {@code KVM_RUN} and waits for its thread to end. A vCPU stops
         * only between exits, with any port I/O it asked for completed, so its registers and
         * memory are consistent for a snapshot. Its outcome is then {@code timeout}.
         */
        public Outcome pause() throws InterruptedException {
            stopping = true;
            for (Thread t : threads) {
                while (t.isAlive()) {
                    for (Vcpu v : vcpus) {
                        v.kick();
                    }
                    t.join(Duration.ofMillis(50));
                }
            }
            stopping = false;
            return new Outcome(serial.toString(), Arrays.asList(outcomes), hostDenials.get());
        }
    }

    private VcpuOutcome runVcpu(Vcpu vcpu) {
        while (true) {
            VmExit exit = vcpu.run();
            switch (exit) {
                case VmExit.Io io when io.port() == PORT_SERIAL && io.out() -> serial.append((char) (io.data() & 0xff));
                case VmExit.Io io when io.port() == PORT_TICK && io.out() ->
                        // With several vCPUs each counts on its own: say whose tick it is.
                        serial.append(String.format(java.util.Locale.ROOT, vcpus.size() > 1 ? "vcpu %2$d tick %1$08x%n" : "tick %08x%n",
                                io.data(), vcpu.id()));
                case VmExit.Io io when io.port() == PORT_DOORBELL && !io.out() -> {
                    Registers r = vcpu.registers();
                    long answer = doorbell(r);
                    vcpu.completeIn(answer);
                    listener.served(vcpu.id(), (int) r.r10(), r.rdi(), r.rsi(), answer);
                }
                case VmExit.Io io when io.port() == PORT_RESULT && io.out() -> {
                    return new VcpuOutcome(vcpu.id(), "result", vcpu.registers().rax(), exit);
                }
                case VmExit.Io io when io.port() == PORT_FAIL && io.out() -> {
                    return new VcpuOutcome(vcpu.id(), "failed", io.data(), exit);
                }
                case VmExit.Io io -> {
                    return new VcpuOutcome(vcpu.id(), "unexpected port 0x" + Integer.toHexString(io.port()), 0, exit);
                }
                case VmExit.Hypercall call when call.nr() == VmExit.Hypercall.KVM_HC_MAP_GPA_RANGE ->
                        vcpu.completeHypercall(convert(call.arg0(), call.arg1() * GuestMemory.PAGE_SIZE,
                                (call.arg2() & MAP_GPA_RANGE_ENCRYPTED) != 0, false));
                case VmExit.Halt h -> {
                    return new VcpuOutcome(vcpu.id(), "halted", 0, exit);
                }
                case VmExit.Interrupted i -> {
                    if (stopping) {
                        return new VcpuOutcome(vcpu.id(), "timeout", 0, exit);
                    }
                }
                default -> {
                    return new VcpuOutcome(vcpu.id(), exit.getClass().getSimpleName(), 0, exit);
                }
            }
        }
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
            if (toPrivate && config.preallocate()) {
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
                if (config.preallocate()) {
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

    /** Closes the VM (its slots and vCPUs), then the memory. Idempotent. */
    @Override
    public void close() {
        vm.close();
        if (memory != null) {
            memory.close();
        }
    }
}
