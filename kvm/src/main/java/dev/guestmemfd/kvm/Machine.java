package dev.guestmemfd.kvm;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.LaunchDigest;
import dev.guestmemfd.linux.KvmUapi;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A small virtual machine for this project's guest programs: a VM whose RAM is one guest
 * memory file bound through two memslots, the program loaded and measured into private
 * memory, one platform thread per vCPU; {@link HostProtocol} serves the guest's requests.
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

        public Config withBacking(Backing other) {
            return new Config(other, memorySize, vcpus, program, preallocate, hypercalls);
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
     *               {@code stopped} ({@link Running#stop}: stopped for good),
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
    private final HostProtocol protocol;
    private volatile boolean stopping;
    /** Why the guest was stopped for good ({@link Running#stop}), or null: it never runs again. */
    private volatile String stoppedFor;
    /** The vCPUs last started, until paused; guarded by this. */
    private Running current;

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
            this.protocol = new HostProtocol(memory, host, config.preallocate(), config.vcpus());
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
        return protocol.serial();
    }

    /** {@return the launch measurement of the page tables and program} */
    public LaunchDigest launchDigest() {
        return digest;
    }

    /** {@return what the host read through its mapping when the guest asked it to (command 6)} */
    public List<String> hostReads() {
        return protocol.hostReads();
    }

    /** Sets who hears the doorbell requests; call before {@link #run}. */
    public void listen(Listener l) {
        protocol.listen(l);
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
    public synchronized Running start() {
        String why = stoppedFor;
        if (why != null) {
            throw new IllegalStateException("the guest was stopped for good: " + why);
        }
        current = new Running();
        return current;
    }

    /**
     * {@return the vCPUs as last started and not paused since} A migration that failed after
     * its pause starts the guest again at the source by itself (post-copy): this is its handle.
     */
    public synchronized java.util.Optional<Running> running() {
        return java.util.Optional.ofNullable(current);
    }

    /** {@return why the guest was stopped for good, if it was} */
    public java.util.Optional<String> stoppedFor() {
        return java.util.Optional.ofNullable(stoppedFor);
    }

    /** A machine whose vCPUs are running. */
    public final class Running {
        private final VcpuOutcome[] outcomes = new VcpuOutcome[vcpus.size()];
        private final List<Thread> threads = new ArrayList<>();
        private final java.util.concurrent.CountDownLatch firstExit = new java.util.concurrent.CountDownLatch(1);
        private volatile long firstExitNanos = -1;

        private Running() {
            for (Vcpu vcpu : vcpus) {
                threads.add(Thread.ofPlatform().name("vcpu-" + vcpu.id()).start(
                        () -> outcomes[vcpu.id()] = runVcpu(vcpu, this)));
            }
        }

        /** Notes the first exit of any vCPU of this run: the guest's first completed step. */
        private void exited(VmExit exit) {
            if (firstExitNanos < 0 && !(exit instanceof VmExit.Interrupted)) {
                synchronized (this) {
                    if (firstExitNanos < 0) {
                        firstExitNanos = System.nanoTime();
                        firstExit.countDown();
                    }
                }
            }
        }

        /**
         * Waits for the first exit of any vCPU since this run started (not a kick): for a guest
         * on lazily restored memory, its first access that completed.
         *
         * @return the {@link System#nanoTime()} of that exit, or -1 when {@code limit} passed first
         */
        public long awaitFirstExit(Duration limit) throws InterruptedException {
            return firstExit.await(limit.toNanos(), java.util.concurrent.TimeUnit.NANOSECONDS) ? firstExitNanos : -1;
        }

        /**
         * Stops the guest for good without waiting: every vCPU leaves {@code KVM_RUN} at once
         * (kicked) or at its next entry, ends as {@code stopped}, and the machine never runs
         * again ({@link #start} refuses). For a listener that runs on a thread the vCPUs may be
         * waiting for (a lazy restore's fault server), so it joins nothing: {@link #pause} or
         * {@link #await} collects the outcomes afterwards. Idempotent; the first reason stays.
         */
        public void stop(String why) {
            synchronized (Machine.this) {
                if (stoppedFor == null) {
                    stoppedFor = why;
                }
            }
            for (Vcpu v : vcpus) {
                v.kick();
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
            synchronized (Machine.this) {
                if (current == this) {
                    current = null;
                }
            }
            return new Outcome(protocol.serial(), Arrays.asList(outcomes), protocol.hostDenials());
        }
    }

    private VcpuOutcome runVcpu(Vcpu vcpu, Running running) {
        while (true) {
            if (stoppedFor != null) {
                return new VcpuOutcome(vcpu.id(), "stopped", 0, null);
            }
            VmExit exit = vcpu.run();
            running.exited(exit);
            if (stoppedFor != null && exit instanceof VmExit.Interrupted) {
                return new VcpuOutcome(vcpu.id(), "stopped", 0, exit);
            }
            VcpuOutcome ended = protocol.serve(vcpu, exit, stopping);
            if (ended != null) {
                return ended;
            }
        }
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
