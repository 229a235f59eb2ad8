package dev.guestmemfd.models;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Owner;
import dev.guestmemfd.OwnerRefusal;
import dev.guestmemfd.PageRun;
import dev.guestmemfd.Pin;
import java.lang.foreign.MemorySegment;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** What each architecture refuses, and that a refusal leaves the library and the model unchanged. */
class ModelRefusalsTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long SIZE = 16 * PAGE;

    private final GuestMemory memory = GuestMemory.create(SIZE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);

    @AfterEach
    void close() {
        memory.close();
    }

    private Binding bind(ArchitectureModel model) {
        return memory.bind(model, 0, SIZE);
    }

    /** Asserts that the conversion is refused by the owner (EPERM) and changes nothing. */
    private void assertRefused(ArchitectureModel model, long offset, long length, Attribute target, Content content,
                               String reason) {
        List<PageRun> runs = memory.pageRuns();
        List<String> states = states(model);
        assertThatThrownBy(() -> memory.convert(offset, length, target, content))
                .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                    assertThat(e.errno()).isEqualTo(dev.guestmemfd.Errno.EPERM);
                    assertThat(e.getMessage()).contains(reason);
                });
        assertThat(memory.pageRuns()).isEqualTo(runs);
        assertThat(states(model)).isEqualTo(states);
    }

    /**
     * Asserts that the content mode is refused as the kernel refuses it (EOPNOTSUPP, error
     * offset: the start of the range) before the model is asked anything, and changes nothing.
     */
    private void assertUnsupported(ArchitectureModel model, long offset, long length, Attribute target, Content content) {
        List<PageRun> runs = memory.pageRuns();
        List<String> states = states(model);
        List<String> log = model.log();
        assertThatThrownBy(() -> memory.convert(offset, length, target, content))
                .isInstanceOfSatisfying(GuestMemoryException.class, e -> {
                    assertThat(e.errno()).isEqualTo(dev.guestmemfd.Errno.EOPNOTSUPP);
                    assertThat(e.errorOffset()).isEqualTo(offset);
                    assertThat(e.getMessage()).contains(content.name());
                });
        assertThat(memory.pageRuns()).isEqualTo(runs);
        assertThat(states(model)).isEqualTo(states);
        assertThat(model.log()).as("the model was not asked").isEqualTo(log);
    }

    private static List<String> states(ArchitectureModel model) {
        return java.util.stream.LongStream.range(0, SIZE / PAGE).mapToObj(p -> {
            try {
                return model.stateOf(p * PAGE);
            } catch (RuntimeException notAttached) {
                return "-";
            }
        }).toList();
    }

    @Test
    void sevSnpAssignsValidatesAndRefusesWhatTheRmpRefuses() {
        SevSnpModel snp = new SevSnpModel();
        Binding b = bind(snp);
        // Before SNP_LAUNCH_FINISH, PRESERVE is granted into the guest only, as KVM grants it.
        assertUnsupported(snp, 0, PAGE, Attribute.SHARED, Content.PRESERVE);
        assertUnsupported(snp, 0, PAGE, Attribute.PRIVATE, Content.ZERO);
        snp.cooperativeGuest(false);
        memory.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        assertThat(snp.stateOf(0)).isEqualTo("assigned");
        snp.pvalidate(0, true);
        assertThat(snp.log()).containsSubsequence("RMPUPDATE(assigned) 0x0", "RMPUPDATE(assigned) 0x1000", "PVALIDATE 0x0");
        assertRefused(snp, 0, PAGE, Attribute.SHARED, Content.ZERO, "still has the page validated");
        snp.pvalidate(0, false);
        memory.convert(0, PAGE, Attribute.SHARED, Content.ZERO);
        assertThat(snp.stateOf(0)).isEqualTo("hypervisor-owned");
        assertThatThrownBy(() -> snp.pvalidate(0, true)).isInstanceOf(ArchitectureFault.class).hasMessageContaining("FAIL_INPUT");
        // The RMP's own rules, asked directly as the library never would:
        assertThatThrownBy(() -> snp.prepareInaccessible(b, PAGE, PAGE, Content.UNSPECIFIED))
                .isInstanceOf(OwnerRefusal.class).hasMessageContaining("FAIL_INUSE");
        try (Pin pin = memory.pin(4 * PAGE, PAGE)) {
            assertThatThrownBy(() -> snp.prepareInaccessible(b, 4 * PAGE, PAGE, Content.UNSPECIFIED))
                    .isInstanceOf(OwnerRefusal.class).hasMessageContaining("host still maps");
            assertThat(pin.segment().byteSize()).isEqualTo(PAGE);
        }
        memory.convert(8 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        memory.convert(9 * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
        snp.launchFinish();
        assertUnsupported(snp, 10 * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
        assertUnsupported(snp, 9 * PAGE, PAGE, Attribute.SHARED, Content.PRESERVE);
        assertThatThrownBy(() -> b.populate(8 * PAGE, MemorySegment.ofArray(new byte[] {1, 2, 3}), null))
                .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(dev.guestmemfd.Errno.EPERM))
                .hasMessageContaining("after SNP_LAUNCH_FINISH");
        assertThat(b.pages().asSlice(8 * PAGE, 3).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)).containsOnly(0);
    }

    @Test
    void tdxAddsBeforeFinalizeAugmentsAfterAndLosesContentOnRemoval() {
        TdxModel tdx = new TdxModel();
        Binding b = bind(tdx);
        memory.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        memory.convert(PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);  // granted before TDH.MR.FINALIZE
        assertThat(tdx.stateOf(0)).isEqualTo("private, no S-EPT entry");
        String empty = tdx.mrtd();
        b.populate(0, MemorySegment.ofArray(new byte[] {(byte) 0x90}), null);
        assertThat(tdx.stateOf(0)).isEqualTo("mapped");
        assertThat(tdx.mrtd()).isNotEqualTo(empty);
        assertThatThrownBy(() -> tdx.accept(PAGE)).isInstanceOf(ArchitectureFault.class).hasMessageContaining("has not added");
        tdx.finalizeTd();
        assertThatThrownBy(() -> b.populate(PAGE, MemorySegment.ofArray(new byte[1]), null))
                .hasMessageContaining("after TDH.MR.FINALIZE");
        assertUnsupported(tdx, 4 * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
        memory.convert(4 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        assertThat(tdx.stateOf(4 * PAGE)).isEqualTo("mapped");
        assertThat(tdx.log()).containsSubsequence("TDH.MEM.PAGE.AUG 0x4000", "TDG.MEM.PAGE.ACCEPT 0x4000");
        assertUnsupported(tdx, 4 * PAGE, PAGE, Attribute.SHARED, Content.PRESERVE);
        tdx.cooperativeGuest(false);
        assertRefused(tdx, 4 * PAGE, PAGE, Attribute.SHARED, Content.ZERO, "MapGPA");
        tdx.cooperativeGuest(true);
        memory.convert(4 * PAGE, PAGE, Attribute.SHARED, Content.ZERO);
        assertThat(tdx.log()).containsSubsequence("TDH.MEM.RANGE.BLOCK 0x4000", "TDH.MEM.TRACK 0x4000", "TDH.MEM.PAGE.REMOVE 0x4000");
        assertThatThrownBy(() -> tdx.accept(4 * PAGE)).isInstanceOf(ArchitectureFault.class).hasMessageContaining("shared GPA");
    }

    @Test
    void pkvmDonatesSharesBackKeepsContentAndRecordsReclaimWhileInUse() {
        PkvmModel pkvm = new PkvmModel();
        Binding b = bind(pkvm);
        try (HostMapping host = memory.map(0, SIZE)) {
            host.write(0, new byte[] {7, 7, 7});
            memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
            assertThat(pkvm.stateOf(0)).isEqualTo("guest-owned");
            assertThat(b.pages().get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0)).isEqualTo((byte) 7);
            pkvm.cooperativeGuest(false);
            assertRefused(pkvm, 0, PAGE, Attribute.SHARED, Content.PRESERVE, "__pkvm_guest_share_host");
            pkvm.cooperativeGuest(true);
            memory.convert(0, PAGE, Attribute.SHARED, Content.PRESERVE);
            assertThat(host.read(0, 3)).containsExactly(7, 7, 7);
        }
        org.assertj.core.api.Assertions.assertThatCode(() -> pkvm.prepareInaccessible(b, PAGE, PAGE, Content.UNSPECIFIED)).doesNotThrowAnyException();
        assertThatThrownBy(() -> pkvm.prepareInaccessible(b, PAGE, PAGE, Content.UNSPECIFIED))
                .isInstanceOf(OwnerRefusal.class).hasMessageContaining("double donation");
        memory.convert(8 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        memory.punchHole(8 * PAGE, PAGE);
        assertThat(pkvm.violations()).singleElement().asString().contains("reclaim of a guest-owned page", "0x8000");
    }

    @Test
    void ccaCopiesOnlyBeforeActivationAndNeedsRipasEmptyToGiveBack() {
        CcaModel cca = new CcaModel();
        Binding b = bind(cca);
        memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
        assertThat(cca.log()).containsSubsequence("RMI_GRANULE_DELEGATE 0x0", "RMI_DATA_CREATE 0x0");
        cca.activate();
        assertUnsupported(cca, PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);
        memory.convert(PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        assertThat(cca.log()).contains("RMI_DATA_CREATE_UNKNOWN 0x1000");
        cca.cooperativeGuest(false);
        assertRefused(cca, 0, PAGE, Attribute.SHARED, Content.ZERO, "RIPAS RAM");
        cca.setRipas(0, false);
        memory.convert(0, PAGE, Attribute.SHARED, Content.ZERO);
        assertThat(cca.stateOf(0)).isEqualTo("undelegated");
        assertThatThrownBy(() -> cca.setRipas(0, true)).isInstanceOf(ArchitectureFault.class);
        assertThatThrownBy(() -> b.populate(PAGE, MemorySegment.ofArray(new byte[1]), null))
                .hasMessageContaining("after RMI_REALM_ACTIVATE");
    }

    @Test
    void gunyahLendsReclaimsAndNeverTakesDonationsBack() {
        GunyahModel gunyah = new GunyahModel();
        bind(gunyah);
        gunyah.cooperativeGuest(false);
        assertRefused(gunyah, 0, PAGE, Attribute.PRIVATE, Content.PRESERVE, "not released the shared parcel");
        gunyah.cooperativeGuest(true);
        memory.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
        assertThat(gunyah.stateOf(0)).isEqualTo("lent (guest)");
        gunyah.donate(PAGE);
        assertRefused(gunyah, 0, 2 * PAGE, Attribute.SHARED, Content.PRESERVE, "donated memory never returns");
        assertThat(gunyah.stateOf(0)).as("page 0 rolled back with the range").isEqualTo("lent (guest)");
        gunyah.cooperativeGuest(false);
        assertRefused(gunyah, 0, PAGE, Attribute.SHARED, Content.PRESERVE, "still uses the page");
    }

    @Test
    void zeroTowardsPrivateIsRefusedForEveryArchitectureBeforeItIsAsked() {
        for (ArchitectureModel model : List.of(new SevSnpModel(), new TdxModel(), new PkvmModel(), new CcaModel(),
                new GunyahModel())) {
            Binding b = bind(model);
            try {
                assertUnsupported(model, 2 * PAGE, 3 * PAGE, Attribute.PRIVATE, Content.ZERO);
            } finally {
                b.close();
            }
        }
    }

    @Test
    void aModeOneOwnerCannotGiveIsRefusedEvenWhereAnotherCould() {
        PkvmModel pkvm = new PkvmModel();
        TdxModel tdx = new TdxModel();
        memory.bind(pkvm, 0, 8 * PAGE);
        memory.bind(tdx, 8 * PAGE, 8 * PAGE);
        tdx.finalizeTd();
        List<String> pkvmLog = pkvm.log();
        assertUnsupported(tdx, 4 * PAGE, 8 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
        assertThat(pkvm.log()).as("no owner was asked to prepare").isEqualTo(pkvmLog);
        memory.convert(0, 4 * PAGE, Attribute.PRIVATE, Content.PRESERVE);  // pKVM's part alone: granted
        assertThat(pkvm.stateOf(0)).isEqualTo("guest-owned");
    }

    @Test
    void aRefusalByOneOwnerRollsTheModelOfAnotherBack() {
        SevSnpModel snp = new SevSnpModel();
        memory.bind(snp, 0, 8 * PAGE);
        memory.bind(new Owner() {
            @Override
            public void prepareInaccessible(Binding b, long offset, long length, Content content) throws OwnerRefusal {
                throw new OwnerRefusal(offset, "the second owner says no");
            }
        }, 8 * PAGE, 8 * PAGE);
        assertThatThrownBy(() -> memory.convert(0, SIZE, Attribute.PRIVATE, Content.UNSPECIFIED))
                .hasMessageContaining("the second owner says no");
        assertThat(snp.stateOf(0)).isEqualTo("hypervisor-owned");
        assertThat(snp.log()).contains("rollback to SHARED 0x0");
        memory.convert(0, 8 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        assertThat(snp.stateOf(7 * PAGE)).isEqualTo("assigned+validated");
    }
}
