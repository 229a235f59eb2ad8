package dev.guestmemfd.migration;

import static dev.guestmemfd.migration.MigrationHarness.PAGE;
import static dev.guestmemfd.migration.MigrationHarness.key;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.migration.MigrationHarness.Outcome;
import dev.guestmemfd.migration.MigrationHarness.Source;
import dev.guestmemfd.migration.MigrationHarness.Tamper;
import dev.guestmemfd.models.ArchitectureModel;
import dev.guestmemfd.models.CcaModel;
import dev.guestmemfd.models.GunyahModel;
import dev.guestmemfd.models.PkvmModel;
import dev.guestmemfd.models.SevSnpModel;
import dev.guestmemfd.models.TdxModel;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import java.util.stream.Stream;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * A guest memory file with an architecture model as its owner migrates without KVM: its pages
 * and the model's state of each page arrive while the workload writes, a model of another
 * architecture refuses the file before any page lands, and a model refuses states it could not
 * have exported, unchanged.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class ModelMigrationTest {
    static final long SIZE = 2L << 20;

    static Stream<Supplier<ArchitectureModel>> models() {
        return Stream.of(SevSnpModel::new, TdxModel::new, PkvmModel::new, CcaModel::new, GunyahModel::new);
    }

    static List<String> states(ArchitectureModel model, long size) {
        List<String> s = new ArrayList<>();
        for (long at = 0; at < size; at += PAGE) {
            s.add(model.stateOf(at));
        }
        return s;
    }

    @ParameterizedTest
    @MethodSource("models")
    void aFileAndItsModelArriveWhileTheWorkloadWrites(Supplier<ArchitectureModel> make) throws Exception {
        ArchitectureModel model = make.get();
        try (Source source = Source.of(Backing.MEMFD, SIZE, model, 0.6, 10_000)) {
            SecretKey key = key();
            List<ArchitectureModel> destinationModel = new ArrayList<>();
            Outcome o = MigrationHarness.migrate(source, List.of(model, source.workload()), key, key, Tamper.NONE,
                    () -> {
                        ArchitectureModel m = make.get();
                        destinationModel.add(m);
                        return m;
                    }, () -> List.of(destinationModel.getFirst(), PageWorkload.check()),
                    MemoryMigration.Options.defaults());
            assertThat(o.sendFailure()).isNull();
            assertThat(o.receiveFailure()).isNull();
            try (GuestMemory memory = o.arrival().memory()) {
                assertThat(((PageWorkload.Check) o.arrival().carried().get(1)).verify(o.arrival().binding())).isEmpty();
                ArchitectureModel arrived = destinationModel.getFirst();
                assertThat(arrived.kind()).isEqualTo(model.kind());
                assertThat(states(arrived, memory.size())).isEqualTo(states(model, SIZE));
                assertThat(arrived.exportState()).isEqualTo(model.exportState());
                assertThat(arrived.violations()).isEmpty();
            }
        }
    }

    /** A state the restore alone would not give (a page the guest stopped validating) and a launched guest arrive. */
    @Test
    void sevSnpValidationAndLaunchArrive() throws Exception {
        SevSnpModel model = new SevSnpModel();
        try (Source source = Source.of(Backing.MEMFD, SIZE, model, 1.0, 0)) {
            long privatePage = firstPrivatePage(source.memory());
            model.pvalidate(privatePage, false);
            model.launchFinish();
            SecretKey key = key();
            SevSnpModel[] arrived = new SevSnpModel[1];
            Outcome o = MigrationHarness.migrate(source, List.of(model, source.workload()), key, key, Tamper.NONE,
                    () -> arrived[0] = new SevSnpModel(), () -> List.of(arrived[0], PageWorkload.check()),
                    MemoryMigration.Options.defaults());
            assertThat(o.receiveFailure()).isNull();
            try (GuestMemory memory = o.arrival().memory()) {
                assertThat(arrived[0].stateOf(privatePage)).isEqualTo("assigned");
                // launched: the destination refuses a launch update, as the source would
                assertThatThrownBy(() -> o.arrival().binding().populate(privatePage, MemorySegment.ofArray(new byte[16]), null))
                        .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EPERM));
                assertThat(memory.isClosed()).isFalse();
            }
        }
    }

    @Test
    void tdxMeasurementArrives() throws Exception {
        TdxModel model = new TdxModel();
        try (Source source = Source.of(Backing.MEMFD, SIZE, model, 0.5, 0)) {
            long privatePage = firstPrivatePage(source.memory());
            source.memory().punchHole(privatePage, PAGE);
            source.binding().populate(privatePage, MemorySegment.ofArray(new byte[64]), null);
            model.finalizeTd();
            SecretKey key = key();
            TdxModel[] arrived = new TdxModel[1];
            Outcome o = MigrationHarness.migrate(source, List.of(model), key, key, Tamper.NONE,
                    () -> arrived[0] = new TdxModel(), () -> List.of(arrived[0]), MemoryMigration.Options.defaults());
            assertThat(o.receiveFailure()).isNull();
            try (GuestMemory memory = o.arrival().memory()) {
                assertThat(arrived[0].mrtd()).isEqualTo(model.mrtd());
                assertThat(arrived[0].stateOf(privatePage)).isEqualTo(model.stateOf(privatePage));
                assertThat(memory.isClosed()).isFalse();
            }
        }
    }

    @Test
    void aModelOfAnotherArchitectureRefusesTheFileBeforeAnyPage() throws Exception {
        SevSnpModel model = new SevSnpModel();
        try (Source source = Source.of(Backing.MEMFD, SIZE, model, 0.5, 5_000)) {
            SecretKey key = key();
            TdxModel[] other = new TdxModel[1];
            Outcome o = MigrationHarness.migrate(source, List.of(model), key, key, Tamper.NONE,
                    () -> other[0] = new TdxModel(), () -> List.of(other[0]), MemoryMigration.Options.defaults());
            assertThat(o.receiveFailure()).isInstanceOfSatisfying(GuestMemoryException.class,
                    e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThat(o.built().memory().isClosed()).isTrue();
            assertThat(o.sendFailure()).isNotNull();
            assertThat(source.selfCheck()).isEmpty();
        }
    }

    @Test
    void aModelRefusesStatesItCouldNotHaveExportedAndStaysAsItWas() {
        try (GuestMemory a = GuestMemory.create(SIZE, MigrationHarness.flags(Backing.MEMFD), Backing.MEMFD);
             GuestMemory b = GuestMemory.create(2 * SIZE, MigrationHarness.flags(Backing.MEMFD), Backing.MEMFD)) {
            SevSnpModel snp = new SevSnpModel();
            a.bind(snp, 0, SIZE);
            SevSnpModel bigger = new SevSnpModel();
            b.bind(bigger, 0, 2 * SIZE);
            byte[] good = snp.exportState();
            byte[] before = bigger.exportState();
            assertThatThrownBy(() -> bigger.importState(good)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("pages");
            assertThat(bigger.exportState()).isEqualTo(before);

            SevSnpModel same = new SevSnpModel();
            try (GuestMemory c = GuestMemory.create(SIZE, MigrationHarness.flags(Backing.MEMFD), Backing.MEMFD)) {
                c.bind(same, 0, SIZE);
                byte[] mine = same.exportState();
                byte[] cut = java.util.Arrays.copyOf(good, good.length - 1);
                byte[] longer = java.util.Arrays.copyOf(good, good.length + 1);
                byte[] badState = good.clone();
                badState[2 + "SEV-SNP".length() + 1 + 4] = 7;
                for (byte[] bad : List.of(cut, longer, badState, new byte[0])) {
                    assertThatThrownBy(() -> same.importState(bad)).isInstanceOf(IllegalArgumentException.class);
                    assertThat(same.exportState()).isEqualTo(mine);
                }
                TdxModel tdx = new TdxModel();
                try (GuestMemory d = GuestMemory.create(SIZE, MigrationHarness.flags(Backing.MEMFD), Backing.MEMFD)) {
                    d.bind(tdx, 0, SIZE);
                    byte[] tdxBefore = tdx.exportState();
                    assertThatThrownBy(() -> tdx.importState(good)).isInstanceOf(IllegalArgumentException.class)
                            .hasMessageContaining("SEV-SNP");
                    assertThat(tdx.exportState()).isEqualTo(tdxBefore);
                }
            }
            assertThatThrownBy(() -> new SevSnpModel().importState(good)).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> new SevSnpModel().exportState()).isInstanceOf(IllegalStateException.class);
        }
    }

    private static long firstPrivatePage(GuestMemory memory) {
        for (long at = 0; at < memory.size(); at += PAGE) {
            if (memory.attribute(at) == dev.guestmemfd.Attribute.PRIVATE) {
                return at;
            }
        }
        throw new IllegalStateException("the workload made no private page");
    }
}
