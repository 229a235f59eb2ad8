package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.LazyRestore;
import dev.guestmemfd.Owner;
import dev.guestmemfd.PageSource;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.testing.GatedPageSource;
import dev.guestmemfd.testing.RequiresKvm;
import dev.guestmemfd.testing.TestKeys;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A real guest runs on lazily restored memory: its first instruction fetch and each of its
 * reads fault inside {@code KVM_RUN} (native code), the library serves them, and garbage
 * collections forced while the guest waits for its pages complete.
 */
@RequiresKvm
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LazyRestoreGuestTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final int PAGES = 16;
    static final int PORT = 0x10;
    /**
     * 16-bit real mode at guest-physical 0: {@code mov si, 0x1000; loop: mov al, [si];
     * out 0x10, al; add si, 0x1000; cmp si, 0x9000; jne loop; hlt}: the first byte of pages 1-8.
     */
    static final byte[] CODE = {
        (byte) 0xbe, 0x00, 0x10,
        (byte) 0x8a, 0x04,
        (byte) 0xe6, PORT,
        (byte) 0x81, (byte) 0xc6, 0x00, 0x10,
        (byte) 0x81, (byte) 0xfe, 0x00, (byte) 0x90,
        0x75, (byte) 0xf2,
        (byte) 0xf4};

    @TempDir
    Path dir;

    static SecretKey key() {
        return TestKeys.aes256();
    }

    /** The guest's code on page 0 (private), page n's first byte 0x40 + n; odd pages private. */
    Path snapshot(SecretKey key) throws IOException {
        Path file = dir.resolve("guest.gmem");
        try (GuestMemory source = GuestMemory.create(PAGES * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
             var out = Files.newOutputStream(file)) {
            Binding owner = source.bind(new Owner() { }, 0, PAGES * PAGE);
            owner.pages().asSlice(0, CODE.length).copyFrom(MemorySegment.ofArray(CODE));
            for (int p = 1; p < PAGES; p++) {
                owner.pages().asSlice(p * PAGE, PAGE).fill((byte) (0x40 + p));
            }
            source.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
            for (int p = 1; p < PAGES; p += 2) {
                source.convert(p * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
            }
            Snapshot.write(owner, key, out);
        }
        return file;
    }

    /** What the guest printed, and the exit that ended its run. */
    record Run(List<Integer> seen, VmExit last) {
    }

    /** Starts vCPU 0 in real mode at guest-physical 0 on its own platform thread. */
    static CompletableFuture<Run> startGuest(Vm vm, List<Vcpu> keep) {
        Vcpu vcpu = vm.createVcpu(0);
        keep.add(vcpu);
        SpecialRegisters s = vcpu.specialRegisters();
        SpecialRegisters.Segment cs = s.cs();
        SpecialRegisters.Segment realCs = new SpecialRegisters.Segment(0, 0xffff, (short) 0, cs.type(), cs.present(),
                cs.dpl(), cs.db(), cs.s(), cs.l(), cs.g(), cs.avl(), cs.unusable());
        vcpu.setSpecialRegisters(new SpecialRegisters(realCs, s.ds(), s.es(), s.fs(), s.gs(), s.ss(), s.tr(), s.ldt(),
                s.gdtBase(), s.gdtLimit(), s.idtBase(), s.idtLimit(), s.cr0(), s.cr2(), s.cr3(), s.cr4(), s.cr8(),
                s.efer(), s.apicBase()));
        vcpu.setRegisters(Registers.start(0, 0, 0, 0));
        CompletableFuture<Run> guest = new CompletableFuture<>();
        Thread.ofPlatform().name("lazy-vcpu").daemon().start(() -> {
            List<Integer> seen = new ArrayList<>();
            try {
                VmExit exit = null;
                for (int exits = 0; exits < 100; exits++) {
                    exit = vcpu.run();
                    if (!(exit instanceof VmExit.Io io && io.out() && io.port() == PORT)) {
                        break;
                    }
                    seen.add((int) (io.data() & 0xff));
                }
                guest.complete(new Run(seen, exit));
            } catch (RuntimeException e) {
                guest.completeExceptionally(e);
            }
        });
        return guest;
    }

    @Test
    void aGuestRunsOnLazilyRestoredMemoryWhileCollectionsAreForced() throws Exception {
        SecretKey key = key();
        Path file = snapshot(key);
        List<Vcpu> vcpus = new ArrayList<>();
        try (Kvm kvm = Kvm.open(); Vm vm = kvm.createVm();
             GuestMemory memory = GuestMemory.create(PAGES * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
             PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Memslot slot = vm.bind(memory, 0, 0, 0, PAGES * PAGE, false);
            GatedPageSource source = new GatedPageSource(inner);
            try (LazyRestore restore = LazyRestore.start(List.of(slot.binding()), source, state -> { })) {
                assertThat(restore.eagerReason()).isEmpty();
                CompletableFuture<Run> guest = startGuest(vm, vcpus);
                while (source.reads() == 0) {
                    Thread.sleep(1);  // the guest's first fetch (or the pull) waits on the source
                }
                for (int i = 0; i < 20; i++) {
                    System.gc();  // safepoints, while the vCPU thread waits in a fault inside KVM_RUN
                }
                assertThat(guest).isNotDone();
                source.open();
                Run run = guest.get(60, TimeUnit.SECONDS);
                assertThat(run.seen()).containsExactly(0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48);
                assertThat(run.last()).isInstanceOf(VmExit.Halt.class);
                assertThat(restore.await(Duration.ofSeconds(60))).isTrue();
                assertThat(restore.stats().pagesFetched()).isEqualTo(PAGES);
                // The guest faulted: served from the source by the fault server, or, when the pull
                // had claimed the page first, answered once the pull brought it (a race of timing).
                assertThat(restore.stats().faults() + restore.stats().zeroFaults()).isPositive();
                assertThat(memory.attribute(PAGE)).isEqualTo(Attribute.PRIVATE);
            } finally {
                vcpus.forEach(Vcpu::close);
            }
        }
    }

    /**
     * The source dies while the guest runs: the guest reads the pages that came, then its vCPU
     * leaves {@code KVM_RUN} at the first lost page (KVM finds it poisoned) instead of reading
     * zeros or waiting for ever, and the JVM lives on; the restore reports the failure.
     */
    @Test
    void aSourceThatDiesUnderARunningGuestStopsItAtTheFirstLostPage() throws Exception {
        SecretKey key = key();
        Path file = snapshot(key);
        List<Vcpu> vcpus = new ArrayList<>();
        try (Kvm kvm = Kvm.open(); Vm vm = kvm.createVm();
             GuestMemory memory = GuestMemory.create(PAGES * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
             PageSource inner = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            Memslot slot = vm.bind(memory, 0, 0, 0, PAGES * PAGE, false);
            GatedPageSource source = new GatedPageSource(inner);
            source.dieFrom(3 * PAGE);
            try (LazyRestore restore = LazyRestore.start(List.of(slot.binding()), source, state -> { })) {
                CompletableFuture<Run> guest = startGuest(vm, vcpus);
                source.open();
                Run run = guest.get(60, TimeUnit.SECONDS);
                assertThat(run.seen()).containsExactly(0x41, 0x42);
                assertThat(run.last()).isNotNull().isNotInstanceOf(VmExit.Halt.class);
                System.out.println("the vCPU left KVM_RUN at the lost page with " + run.last());
                assertThat(restore.failure()).isPresent();
                org.assertj.core.api.Assertions.assertThatThrownBy(() -> restore.await(Duration.ofSeconds(60)))
                        .isInstanceOf(dev.guestmemfd.GuestMemoryException.class).hasMessageContaining("the source died");
            } finally {
                vcpus.forEach(Vcpu::close);
            }
        }
    }
}
