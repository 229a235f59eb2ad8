package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.Backing;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** A counting guest paused, sent over loopback TCP, restored, and counting on. */
class MigrationTest {
    @BeforeAll
    static void kvm() {
        KvmTests.requireKvm();
    }

    /** {@return the tick numbers of every complete line of the output} */
    static List<Long> ticks(String output) {
        Matcher m = Pattern.compile("tick ([0-9a-f]{8})\n").matcher(output);
        return m.results().map(r -> Long.parseLong(r.group(1), 16)).toList();
    }

    @ParameterizedTest
    @EnumSource(value = Backing.class, names = {"MEMFD", "KERNEL"})
    void aRunningGuestMovesAndCarriesOn(Backing backing) throws Exception {
        Machine.Config config = Machine.Config.of(GuestProgram.COUNTER, backing, 1).withMemorySize(8L << 20);
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            CompletableFuture<String> destination = CompletableFuture.supplyAsync(() -> {
                try (Socket s = server.accept(); Machine m = Migration.receive(kvm, s)) {
                    return m.run(Duration.ofMillis(700)).serial();
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            String before;
            Migration.Report report;
            try (Machine source = Machine.boot(kvm, config);
                 Socket s = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort())) {
                before = source.run(Duration.ofMillis(700)).serial();
                report = Migration.send(source, s, System.nanoTime());
            }
            String after = destination.get();
            List<Long> sourceTicks = ticks(before);
            List<Long> all = ticks(before + after);
            assertThat(sourceTicks).as("the source counted").isNotEmpty();
            assertThat(all.size()).as("the destination counted on").isGreaterThan(sourceTicks.size());
            for (int i = 0; i < all.size(); i++) {
                assertThat(all.get(i)).as("tick %d", i).isEqualTo(i + 1L);
            }
            assertThat(report.bytesSent()).isPositive().isLessThan(config.memorySize());
            assertThat(report.pausedToRestoredNs()).isPositive();
        }
    }
}
