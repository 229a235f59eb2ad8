package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostAccessFault;
import dev.guestmemfd.testing.RequiresBacking;
import dev.guestmemfd.testing.RequiresKvm;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/** The three guest programs, run on the real {@code /dev/kvm}. */
@RequiresKvm
@RequiresBacking
class GuestProgramsTest {
    static final Duration LIMIT = Duration.ofSeconds(60);

    @ParameterizedTest
    @EnumSource(Backing.class)
    void helloPrintsOverTheSerialPortAndHalts(Backing backing) throws Exception {
        try (Kvm kvm = Kvm.open(); Machine m = Machine.boot(kvm, Machine.Config.of(GuestProgram.HELLO, backing, 1))) {
            Machine.Outcome outcome = m.run(LIMIT);
            assertThat(outcome.serial()).isEqualTo("Hello from a guest whose memory is a guestmemfd file.\n");
            assertThat(outcome.vcpus()).singleElement().extracting(Machine.VcpuOutcome::how).isEqualTo("halted");
            // The program was loaded into private memory: the host cannot read it back.
            assertThat(m.memory().attribute(GuestLayout.CODE)).isEqualTo(Attribute.PRIVATE);
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> m.hostMapping().read(GuestLayout.CODE, 8))
                    .isInstanceOf(HostAccessFault.class);
            assertThat(m.launchDigest().hex()).hasSize(96);
        }
    }

    static Stream<Arguments> conversionRuns() {
        // Huge pages once each way of allocating: the scenario's conversions all fall inside huge pages.
        return Stream.concat(Stream.of(Backing.MEMFD, Backing.KERNEL, Backing.SECRET).flatMap(backing ->
                Stream.of(1, 2).flatMap(vcpus -> Stream.of(true, false).map(pre -> Arguments.of(backing, vcpus, pre)))),
                Stream.of(true, false).map(pre -> Arguments.of(Backing.HUGETLB_2M, 2, pre)));
    }

    @ParameterizedTest(name = "{0}, {1} vCPU(s), preallocate {2}")
    @MethodSource("conversionRuns")
    void conversionsScenarioNeverShowsPrivateDataToTheHost(Backing backing, int vcpus, boolean preallocate)
            throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.CONVERSIONS, backing, vcpus).withPreallocate(preallocate);
        try (Kvm kvm = Kvm.open(); Machine m = Machine.boot(kvm, config)) {
            Machine.Outcome outcome = m.run(LIMIT);
            assertThat(outcome.vcpus()).as("per vCPU: how = result and value 0 is success; "
                    + "failed values are (range << 8 | step) from conversions.S").allSatisfy(v -> {
                        assertThat(v.how()).isEqualTo("result");
                        assertThat(v.value()).isZero();
                    });
            assertThat(outcome.hostDenials()).as("host reads of private pages refused").isPositive();
            assertThat(m.memory().conversions()).isGreaterThan(vcpus * 5L);
            assertThat(m.vm().invalidations()).as("the VM was told of every punch and conversion").isPositive();
        }
    }

    @ParameterizedTest
    @EnumSource(value = Backing.class, names = {"MEMFD", "KERNEL"})
    void touchAllWritesEveryPageAndReportsItsChecksum(Backing backing) throws Exception {
        long size = 32L << 20;
        Machine.Config config = Machine.Config.of(GuestProgram.TOUCH_ALL, backing, 1).withMemorySize(size);
        try (Kvm kvm = Kvm.open(); Machine m = Machine.boot(kvm, config)) {
            Machine.Outcome outcome = m.run(LIMIT);
            long sum = 0;
            for (long gpa = GuestLayout.region(0); gpa < size; gpa += GuestMemory.PAGE_SIZE) {
                sum += gpa;
            }
            long expected = sum;
            assertThat(outcome.vcpus()).singleElement().satisfies(v -> {
                assertThat(v.how()).isEqualTo("result");
                assertThat(v.value()).isEqualTo(expected);
            });
            assertThat(m.memory().pageCounts().allocated()).isGreaterThanOrEqualTo((size - GuestLayout.region(0)) / 4096);
        }
    }

    @Test
    void aGuestThatNeverStopsIsKickedOutAtTheTimeLimit() throws Exception {
        // On this host a vmcall never returns to user space: the run must end by the kick.
        Machine.Config config = Machine.Config.of(GuestProgram.HYPERCALL, Backing.MEMFD, 1);
        try (Kvm kvm = Kvm.open(); Machine m = Machine.boot(kvm, config)) {
            long start = System.nanoTime();
            Machine.Outcome outcome = m.run(Duration.ofMillis(500));
            assertThat(Duration.ofNanos(System.nanoTime() - start)).isLessThan(Duration.ofSeconds(20));
            // Either the hypercall exited (a host where it works) or the kick ended the run.
            assertThat(outcome.vcpus().getFirst().how()).isIn("timeout", "result", "halted");
        }
    }

    @Test
    void guestRequestedConversionByHypercallWhereTheHostPassesItThrough() throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.HYPERCALL, Backing.MEMFD, 1).withHypercalls(true);
        try (Kvm kvm = Kvm.open(); Machine m = Machine.boot(kvm, config)) {
            Machine.Outcome outcome = m.run(Duration.ofSeconds(3));
            assumeTrue(!outcome.vcpus().getFirst().how().equals("timeout"),
                    "this host never passes KVM_HC_MAP_GPA_RANGE to user space (KVM_RUN did not return in 3 s; "
                            + "DESIGN.md section 3): the doorbell is the tested path here");
            assertThat(outcome.vcpus().getFirst().how()).isEqualTo("result");
            assertThat(outcome.vcpus().getFirst().value()).isZero();
            assertThat(m.memory().attribute(GuestLayout.region(0))).isEqualTo(Attribute.PRIVATE);
        }
    }

    @Test
    void committedGuestBinariesMatchTheirAssemblySources() throws IOException, InterruptedException {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/as")) && Files.isExecutable(Path.of("/usr/bin/ld")),
                "needs GNU as and ld to rebuild the guests");
        Path out = Files.createTempDirectory("guests");
        Process p = new ProcessBuilder("bash", "guests/build.sh", out.toString()).inheritIO().start();
        assertThat(p.waitFor()).isZero();
        for (GuestProgram program : GuestProgram.values()) {
            assertThat(Files.readAllBytes(out.resolve(program.fileName() + ".bin")))
                    .as("%s.bin rebuilt from %s.S", program.fileName(), program.fileName())
                    .isEqualTo(program.bytes());
        }
    }
}
