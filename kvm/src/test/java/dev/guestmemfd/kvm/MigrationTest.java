package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Backing;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.testing.RequiresBacking;
import dev.guestmemfd.testing.OtherHostClock;
import dev.guestmemfd.testing.RequiresKvm;
import dev.guestmemfd.testing.TestKeys;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A counting guest moved while it runs, over loopback TCP, and counting on. The guest keeps
 * its count in memory only and writes it every tick, so it counts on without a gap or a
 * repeat only if the pages it wrote during pre-copy were sent again.
 */
@RequiresKvm
@RequiresBacking
class MigrationTest {
    /** {@return the tick numbers of every complete line of the output} */
    static List<Long> ticks(String output) {
        Matcher m = Pattern.compile("tick ([0-9a-f]{8})\n").matcher(output);
        return m.results().map(r -> Long.parseLong(r.group(1), 16)).toList();
    }

    static void assertCountsOn(String before, String after) {
        List<Long> sourceTicks = ticks(before);
        List<Long> all = ticks(before + after);
        assertThat(sourceTicks).as("the source counted").isNotEmpty();
        assertThat(all.size()).as("the destination counted on").isGreaterThan(sourceTicks.size());
        for (int i = 0; i < all.size(); i++) {
            assertThat(all.get(i)).as("tick %d (source stopped at %d)", i, sourceTicks.getLast()).isEqualTo(i + 1L);
        }
    }

    @ParameterizedTest
    @EnumSource(Backing.class)
    void aRunningGuestMovesAndCarriesOn(Backing backing) throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, backing, 1).withMemorySize(8L << 20);
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            CompletableFuture<String> destination = destination(kvm, server, 700);
            // The guest ticks (and writes its count) while the first round is on its way.
            Migration.Report report = runThenSend(kvm, server, config, 500,
                    Migration.Options.defaults().withRoundListener((round, bytes) -> {
                        if (round == 0) {
                            sleep(200);
                        }
                    }));
            assertCountsOn(report.source().serial(), destination.get());
            if (backing == Backing.KERNEL) {
                assertThat(report.path()).isEqualTo(Migration.Path.STOP_AND_COPY);
                assertThat(report.why()).contains("guest_memfd").contains("EINVAL");
                assertThat(report.roundBytes()).hasSize(1);
            } else {
                assertThat(report.path()).as(report.why()).isEqualTo(Migration.Path.PRE_COPY);
                assertThat(report.roundBytes().size()).as("every page, then the pages written since").isGreaterThanOrEqualTo(2);
                long later = report.pageBytes() - report.roundBytes().getFirst();
                assertThat(later).as("later rounds send the pages the guest wrote meanwhile")
                        .isPositive().isLessThan(report.roundBytes().getFirst());
            }
            assertThat(report.bytesSent()).isPositive().isLessThan(config.memorySize());
            assertThat(report.pausedToRestoredNs()).isPositive().isLessThanOrEqualTo(report.totalNs());
        }
    }

    /**
     * Downtime is timed on the source's clock alone: a destination on a host whose clock has
     * another origin (its acknowledgement's value shifted by about 13 days either way) changes
     * nothing; subtracting the two clocks would give 13 days, or a negative time.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(longs = {1L << 50, -(1L << 50)})
    @org.junit.jupiter.api.Timeout(120)
    void downtimeIsTimedOnTheSourcesClockAlone(long otherHostsClock) throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 1).withMemorySize(8L << 20);
        SecretKey key = TestKeys.aes256();
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            CompletableFuture<Void> destination = CompletableFuture.runAsync(() -> {
                try (Socket s = timed(server.accept());
                     Machine m = Migration.receive(kvm, s.getInputStream(), s.getOutputStream(), key)) {
                    assertThat(m.memory().size()).isEqualTo(config.memorySize());
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            Migration.Report report;
            try (Machine source = Machine.boot(kvm, config);
                 Socket s = timed(new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort()))) {
                report = Migration.send(source.start(), new OtherHostClock(s.getInputStream(), otherHostsClock),
                        s.getOutputStream(), key, Migration.Options.defaults());
            }
            destination.get(60, java.util.concurrent.TimeUnit.SECONDS);
            assertThat(report.pausedToRestoredNs()).isPositive().isLessThanOrEqualTo(report.totalNs());
            // The test's timeout bounds the whole migration: no clock of another host leaks in.
            assertThat(report.totalNs()).isLessThan(java.util.concurrent.TimeUnit.SECONDS.toNanos(120));
        }
    }

    /**
     * {@return what the guest prints once received on {@code server} and run for {@code ms}}
     * First it checks that the guest's code, private at the source, is private here too: the
     * host of the destination is refused it.
     */
    static CompletableFuture<String> destination(Kvm kvm, ServerSocket server, long ms) {
        return CompletableFuture.supplyAsync(() -> {
            try (Socket s = timed(server.accept()); Machine m = Migration.receive(kvm, s)) {
                assertThat(m.memory().attribute(GuestLayout.CODE)).isEqualTo(dev.guestmemfd.Attribute.PRIVATE);
                assertThatThrownBy(() -> m.hostMapping().read(GuestLayout.CODE, 8))
                        .isInstanceOf(dev.guestmemfd.HostAccessFault.class);
                return m.run(Duration.ofMillis(ms)).serial();
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        });
    }

    /** Boots {@code config}, lets it run {@code runMs}, then migrates it, running, to {@code server}. */
    static Migration.Report runThenSend(Kvm kvm, ServerSocket server, Machine.Config config, long runMs,
                                        Migration.Options options) throws Exception {
        try (Machine source = Machine.boot(kvm, config);
             Socket s = timed(new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort()))) {
            Machine.Running running = source.start();
            Thread.sleep(runMs);
            return Migration.send(running, s, options);
        }
    }

    /** {@return the socket, whose reads give up after a minute: a stuck migration fails the test} */
    static Socket timed(Socket s) throws java.net.SocketException {
        s.setSoTimeout(60_000);
        return s;
    }

    /** Where XMM0 lies in the XSAVE area: byte 160 of the legacy FXSAVE region. */
    static final int XMM0 = 160;
    /** The XSAVE header's bitmap of components in use (bit 1: SSE), at byte 512. */
    static final int XSTATE_BV = 512;

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Test
    void stopAndCopyCanBeAskedForOnAnyBacking() throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 1).withMemorySize(8L << 20);
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            CompletableFuture<String> destination = destination(kvm, server, 500);
            Migration.Report report = runThenSend(kvm, server, config, 300, Migration.Options.defaults().withPreCopy(false));
            assertThat(report.path()).isEqualTo(Migration.Path.STOP_AND_COPY);
            assertThat(report.roundBytes()).hasSize(1);
            assertCountsOn(report.source().serial(), destination.get());
        }
    }

    /** Saved to a file and loaded back in the same process: the file is all it needs, with the key. */
    @Test
    void aSavedMachineLoadsAndCarriesOnAndAnAlteredFileIsRefused() throws Exception {
        KeyGenerator generator = KeyGenerator.getInstance("AES");
        generator.init(256);
        SecretKey key = generator.generateKey();
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 1).withMemorySize(8L << 20);
        ByteArrayOutputStream file = new ByteArrayOutputStream();
        String before;
        try (Kvm kvm = Kvm.open()) {
            byte[] xmm = new byte[16 * 16];
            new java.util.Random(7).nextBytes(xmm);
            try (Machine source = Machine.boot(kvm, config)) {
                before = source.run(Duration.ofMillis(400)).serial();
                // State the counting guest does not touch, set while it is paused: it must travel too.
                Vcpu vcpu = source.vcpus().getFirst();
                byte[] fpu = vcpu.xsave();
                System.arraycopy(xmm, 0, fpu, XMM0, xmm.length);
                fpu[XSTATE_BV] |= 2;  // SSE state in use, else the CPU takes it for its initial (zero) state
                vcpu.setXsave(fpu);
                vcpu.setMsrs(List.of(new Msr(Msr.KERNEL_GS_BASE, 0xffff_8880_1234_5000L), new Msr(Msr.LSTAR, 0xffff_ffff_8100_0040L)));
                Migration.save(source, key, file);
            }
            byte[] saved = file.toByteArray();
            byte[] altered = saved.clone();
            altered[saved.length - 100] ^= 1;  // inside the sealed vCPU state
            assertThatThrownBy(() -> Migration.load(kvm, key, new ByteArrayInputStream(altered), new Snapshot.ReplayGuard()))
                    .isInstanceOf(GuestMemoryException.class).hasMessageContaining("EBADMSG");
            byte[] cut = Arrays.copyOf(saved, saved.length / 2);
            assertThatThrownBy(() -> Migration.load(kvm, key, new ByteArrayInputStream(cut), new Snapshot.ReplayGuard()))
                    .isInstanceOf(GuestMemoryException.class).hasMessageContaining("EBADMSG");
            try (Machine loaded = Migration.load(kvm, key, new ByteArrayInputStream(saved), new Snapshot.ReplayGuard())) {
                Vcpu vcpu = loaded.vcpus().getFirst();
                assertThat(Arrays.copyOfRange(vcpu.xsave(), XMM0, XMM0 + xmm.length)).as("XMM0..15").isEqualTo(xmm);
                assertThat(vcpu.msrs(Msr.MIGRATED)).as("KVM reads every MSR a migration carries").hasSize(Msr.MIGRATED.length);
                assertThat(vcpu.msrs(Msr.KERNEL_GS_BASE, Msr.LSTAR)).containsExactly(
                        new Msr(Msr.KERNEL_GS_BASE, 0xffff_8880_1234_5000L), new Msr(Msr.LSTAR, 0xffff_ffff_8100_0040L));
                assertCountsOn(before, loaded.run(Duration.ofMillis(400)).serial());
            }
        }
    }

    /** A receiver that hangs up mid-stream: the send fails, and the guest runs on at the source untouched. */
    @Test
    void aFailedMigrationLeavesTheSourceRunning() throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 1).withMemorySize(8L << 20);
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            CompletableFuture<Void> hangUp = CompletableFuture.runAsync(() -> {
                try (Socket s = server.accept()) {
                    dev.guestmemfd.migration.X25519Agreement.agree(s.getInputStream(), s.getOutputStream());
                    s.getInputStream().readNBytes(4096);  // the description, some pages
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            try (Machine source = Machine.boot(kvm, config);
                 Socket s = timed(new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort()))) {
                Machine.Running running = source.start();
                Thread.sleep(300);
                assertThatThrownBy(() -> Migration.send(running, s, Migration.Options.defaults()))
                        .isInstanceOf(java.io.IOException.class);
                hangUp.get();
                int ticksAtFailure = ticks(source.serial()).size();
                Thread.sleep(300);
                String serial = running.pause().serial();
                List<Long> all = ticks(serial);
                assertThat(all.size()).as("it counted on after the failure").isGreaterThan(ticksAtFailure);
                for (int i = 0; i < all.size(); i++) {
                    assertThat(all.get(i)).isEqualTo(i + 1L);
                }
            }
        }
    }

    /**
     * The conversions guest moved in the middle of its scenario, by pre-copy: while the first
     * round travels it converts pages (the library zeroes them), the host writes shared pages
     * and the guest writes private ones; the destination must have all of it, or the guest's
     * own checks fail there.
     */
    @Test
    void aGuestMovedInTheMiddleOfItsConversionsFinishesThemAtTheDestination() throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.CONVERSIONS, Backing.MEMFD, 1);
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            CompletableFuture<Machine.Outcome> destination = CompletableFuture.supplyAsync(() -> {
                try (Socket s = timed(server.accept()); Machine m = Migration.receive(kvm, s)) {
                    return m.run(Duration.ofSeconds(60));
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            Migration.Report report;
            long conversionsDuringPreCopy;
            try (Machine source = Machine.boot(kvm, config);
                 Socket s = timed(new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort()))) {
                Machine.Running running = source.start();
                Thread.sleep(1000);
                long before = source.memory().conversions();
                // Hold the first round until the guest has converted more: its conversions come in
                // bursts seconds apart on this nested host.
                report = Migration.send(running, s, Migration.Options.defaults().withRoundListener((round, bytes) -> {
                    long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
                    while (round == 0 && source.memory().conversions() == before && System.nanoTime() < deadline) {
                        sleep(20);
                    }
                }));
                conversionsDuringPreCopy = source.memory().conversions() - before;
            }
            assertThat(report.path()).isEqualTo(Migration.Path.PRE_COPY);
            assertThat(report.source().vcpus().getFirst().how()).as("moved before it finished").isEqualTo("timeout");
            assertThat(conversionsDuringPreCopy).as("it converted pages while its memory was on the way").isPositive();
            Machine.Outcome there = destination.get();
            assertThat(there.vcpus().getFirst().how()).as(there.toString()).isEqualTo("result");
            assertThat(there.allSucceeded()).as(there.toString()).isTrue();
        }
    }

    /** Two vCPUs, each counting in its own region: both carry on, each from its own count. */
    @Test
    void aGuestOfTwoVcpusMovesAndEachCountsOn() throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 2);
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            CompletableFuture<String> destination = destination(kvm, server, 700);
            Migration.Report report = runThenSend(kvm, server, config, 500, Migration.Options.defaults());
            String after = destination.get();
            for (int vcpu = 0; vcpu < 2; vcpu++) {
                assertCountsOn(only(report.source().serial(), vcpu), only(after, vcpu));
            }
        }
    }

    /** {@return the lines of vCPU {@code id}'s ticks, without the prefix} */
    static String only(String serial, int id) {
        StringBuilder out = new StringBuilder();
        serial.lines().filter(l -> l.startsWith("vcpu " + id + " ")).forEach(l -> out.append(l.substring(7)).append('\n'));
        return out.toString();
    }
}
