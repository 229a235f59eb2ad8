package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.linux.ProcSelf;
import dev.guestmemfd.testing.RequiresBacking;
import dev.guestmemfd.testing.RequiresKvm;
import java.time.Duration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Binding guest memory into VMs: bad input, several slots and VMs, and lifetimes. */
@RequiresKvm
@RequiresBacking
class MemslotTest {
    static final long MIB = 1L << 20;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
    static final String[] MEMORY_FILES = {"memfd:", "secretmem", "kvm"};
    private Kvm kvm;
    private int descriptors;

    @BeforeEach
    void open() {
        descriptors = ProcSelf.descriptorsTo(MEMORY_FILES);
        kvm = Kvm.open();
    }

    @AfterEach
    void close() {
        kvm.close();
        assertThat(ProcSelf.descriptorsTo(MEMORY_FILES)).as("memory and KVM descriptors left open").isEqualTo(descriptors);
    }

    static GuestMemory memoryFor(Vm vm, Backing backing, long size) {
        return backing == Backing.KERNEL ? vm.createGuestMemory(size, FLAGS) : GuestMemory.create(size, FLAGS, backing);
    }

    static void assertKvmErrno(Runnable call, String errno) {
        assertThatThrownBy(call::run).isInstanceOfSatisfying(KvmException.class,
                e -> assertThat(e.errno().name()).isEqualTo(errno));
    }

    @ParameterizedTest
    @EnumSource(value = Backing.class, names = {"MEMFD", "KERNEL"})
    void badBindingsAreRefusedAndChangeNothing(Backing backing) {
        try (Vm vm = kvm.createVm(); GuestMemory memory = memoryFor(vm, backing, 8 * MIB)) {
            vm.bind(memory, 0, 0, 0, 2 * MIB, false);
            // overlapping guest-physical ranges
            assertKvmErrno(() -> vm.bind(memory, 1, MIB, 4 * MIB, 2 * MIB, false), "EEXIST");
            // the same file offsets twice
            assertThatThrownBy(() -> vm.bind(memory, 1, 16 * MIB, MIB, 2 * MIB, false))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(dev.guestmemfd.Errno.EINVAL));
            // unaligned guest-physical address, offsets out of the file
            assertKvmErrno(() -> vm.bind(memory, 1, 16 * MIB + 100, 4 * MIB, 2 * MIB, false), "EINVAL");
            assertThatThrownBy(() -> vm.bind(memory, 1, 16 * MIB, 7 * MIB, 2 * MIB, false))
                    .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(dev.guestmemfd.Errno.EINVAL));
            if (backing == Backing.KERNEL) {
                assertKvmErrno(() -> vm.bind(memory, 1, 16 * MIB, 4 * MIB, 2 * MIB, true), "EINVAL");
            }
            // nothing half-bound: the ranges refused above can be bound now
            assertThat(vm.memslots()).hasSize(1);
            vm.bind(memory, 1, 16 * MIB, 4 * MIB, 2 * MIB, false);
            assertThat(vm.memslots()).hasSize(2);
        }
    }

    @Test
    void dirtyLoggingWorksOnOrdinarySlotsOverTheMemfdBacking() throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.HELLO, Backing.MEMFD, 1);
        try (Machine m = Machine.boot(kvm, config)) {
            Vm vm = m.vm();
            GuestMemory memory = m.memory();
            try (GuestMemory other = GuestMemory.create(4 * MIB, FLAGS, Backing.MEMFD)) {
                Memslot logged = vm.bind(other, 5, 64 * MIB, 0, 4 * MIB, true);
                assertThat(vm.dirtyLog(logged)).containsOnly(0L);
                logged.close();
            }
            assertThat(memory.isClosed()).isFalse();
        }
    }

    @Test
    void aKernelGuestMemfdOfAnotherVmIsRefused() {
        try (Vm a = kvm.createVm(); Vm b = kvm.createVm(); GuestMemory memory = a.createGuestMemory(4 * MIB, FLAGS);
             GuestMemory memfd = GuestMemory.create(4 * MIB, FLAGS, Backing.MEMFD)) {
            assertKvmErrno(() -> b.bind(memory, 0, 0, 0, 4 * MIB, false), "EINVAL");
            // nothing was bound: the slot is free for memory of the right kind
            b.bind(memfd, 0, 0, 0, 4 * MIB, false).close();
        }
    }

    @Test
    void oneFileBacksTwoVmsAtDifferentOffsets() throws Exception {
        try (GuestMemory memory = GuestMemory.create(8 * MIB, FLAGS, Backing.MEMFD);
             Vm a = kvm.createVm(); Vm b = kvm.createVm()) {
            Memslot sa = a.bind(memory, 0, 0, 0, 4 * MIB, false);
            Memslot sb = b.bind(memory, 0, 0, 4 * MIB, 4 * MIB, false);
            memory.punchHole(0, 8 * MIB);
            assertThat(a.invalidations()).isEqualTo(1);
            assertThat(b.invalidations()).isEqualTo(1);
            memory.punchHole(4 * MIB, MIB);
            assertThat(a.invalidations()).isEqualTo(1);
            assertThat(b.invalidations()).isEqualTo(2);
            assertThat(sa.guestPhysicalOf(4096)).isEqualTo(4096);
            assertThat(sb.guestPhysicalOf(4 * MIB + 4096)).isEqualTo(4096);
        }
    }

    @ParameterizedTest
    @EnumSource(value = Backing.class, names = {"MEMFD", "KERNEL"})
    void theFileOutlivesTheVm(Backing backing) throws Exception {
        GuestMemory memory;
        try (Machine m = Machine.boot(kvm, Machine.Config.of(GuestProgram.HELLO, backing, 1))) {
            assertThat(m.run(Duration.ofSeconds(30)).serial()).startsWith("Hello");
            memory = m.memory();
            m.vm().close();
            // The VM is gone; the file still allocates, punches and maps.
            memory.allocate(GuestLayout.region(0), MIB);
            memory.punchHole(GuestLayout.region(0), MIB);
            try (HostMapping map = memory.map(GuestLayout.region(0), MIB)) {
                map.write(0, new byte[] {1, 2, 3});
                assertThat(map.read(0, 3)).containsExactly(1, 2, 3);
            }
        }
        assertThat(memory.isClosed()).isTrue();
    }

    @Test
    void closingTheFileUnderARunningVmRemovesItsSlotsWithoutACrash() throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.HELLO, Backing.MEMFD, 1);
        try (Machine m = Machine.boot(kvm, config)) {
            m.memory().close();
            assertThat(m.vm().memslots()).isEmpty();
            // The guest has no memory left: KVM reports its first fetch, the JVM lives on.
            Machine.Outcome outcome = m.run(Duration.ofSeconds(10));
            assertThat(outcome.vcpus().getFirst().how()).isNotEqualTo("halted");
        }
    }
}
