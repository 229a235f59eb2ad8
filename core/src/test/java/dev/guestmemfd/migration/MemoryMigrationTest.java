package dev.guestmemfd.migration;

import static dev.guestmemfd.migration.MigrationHarness.PAGE;
import static dev.guestmemfd.migration.MigrationHarness.key;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.Owner;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.migration.MigrationHarness.Outcome;
import dev.guestmemfd.migration.MigrationHarness.Source;
import dev.guestmemfd.migration.MigrationHarness.Tamper;
import dev.guestmemfd.testing.OtherHostClock;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Memory-only migration over loopback: a file whose workload keeps writing shared pages
 * through the host and private pages through the owner arrives whole, and a stream that is
 * cut, altered or sealed with another key leaves the source as it was and still usable, and
 * the destination holding nothing.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class MemoryMigrationTest {
    static final long SIZE = 4L << 20;

    static Stream<Backing> backings() {
        return Backing.available().stream().filter(b -> b != Backing.KERNEL);
    }

    static Owner owner() {
        return new Owner() { };
    }

    static List<CarriedState> check() {
        return List.of(PageWorkload.check());
    }

    static List<String> verify(MemoryMigration.Arrival arrival) {
        return ((PageWorkload.Check) arrival.carried().getFirst()).verify(arrival.binding());
    }

    @ParameterizedTest
    @MethodSource("backings")
    void aFileArrivesWithEveryPageWhileItsWorkloadWrites(Backing backing) throws Exception {
        try (Source source = Source.of(backing, SIZE, owner(), 0.5, 20_000)) {
            List<Long> whileRunning = new ArrayList<>();
            SecretKey key = key();
            Outcome o = MigrationHarness.migrate(source, List.of(source.workload()), key, key, Tamper.NONE,
                    MemoryMigrationTest::owner, MemoryMigrationTest::check,
                    new MemoryMigration.Options(4, 0, (round, bytes) -> whileRunning.add(bytes)));
            assertThat(o.sendFailure()).isNull();
            assertThat(o.receiveFailure()).isNull();
            try (var memory = o.arrival().memory()) {
                assertThat(memory.size()).isEqualTo(SIZE);
                assertThat(verify(o.arrival())).isEmpty();
                MemoryMigration.Report r = o.report();
                assertThat(r.memoryBytes()).isEqualTo(SIZE);
                assertThat(r.roundBytes()).hasSize(whileRunning.size() + 1);
                if (backing.isHugetlb()) {  // a filled 4 KiB page allocates its whole huge page: all of it travels
                    assertThat(r.roundBytes().getFirst()).isGreaterThanOrEqualTo(source.workload().filledPages() * PAGE);
                } else {
                    assertThat(r.roundBytes().getFirst()).isEqualTo(source.workload().filledPages() * PAGE);
                }
                assertThat(r.bytesSent()).isGreaterThan(r.pageBytes());
                assertThat(r.pausedToRestoredNs()).isPositive().isLessThanOrEqualTo(r.totalNs());
                assertThat(source.workload().writes()).as("the workload wrote while the pages travelled").isPositive();
            }
        }
    }

    @Test
    void theLoopbackPathAgreesOnAKey() throws Exception {
        try (Source source = Source.of(Backing.MEMFD, SIZE, owner(), 0.3, 5_000);
             java.util.concurrent.ExecutorService threads = java.util.concurrent.Executors.newCachedThreadPool();
             ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            server.setSoTimeout(60_000);
            CompletableFuture<MemoryMigration.Arrival> receiver = CompletableFuture.supplyAsync(() -> {
                try (Socket s = server.accept()) {
                    return MemoryMigration.receive(s, new Snapshot.ReplayGuard(), d -> new MemoryMigration.Destination(
                            d.create(), owner(), check()));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, threads);
            MemoryMigration.Report report;
            try (Socket s = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort())) {
                report = MemoryMigration.send(source.binding(), source.workload(), List.of(source.workload()), s,
                        MemoryMigration.Options.defaults());
            }
            MemoryMigration.Arrival arrival = receiver.get(60, TimeUnit.SECONDS);
            try (var memory = arrival.memory()) {
                assertThat(memory.size()).isEqualTo(SIZE);
                assertThat(verify(arrival)).isEmpty();
                assertThat(report.bytesSent()).isGreaterThan(report.pageBytes());
            }
        }
    }

    /**
     * Downtime is timed on the source's clock alone: a destination on a host whose clock has
     * another origin (its acknowledgement's value shifted by about 13 days either way) changes
     * nothing; subtracting the two clocks would give 13 days, or a negative time.
     */
    @ParameterizedTest
    @ValueSource(longs = {1L << 50, -(1L << 50)})
    void downtimeIsTimedOnTheSourcesClockAlone(long otherHostsClock) throws Exception {
        try (Source source = Source.of(Backing.MEMFD, SIZE, owner(), 0.3, 0);
             java.util.concurrent.ExecutorService threads = java.util.concurrent.Executors.newCachedThreadPool();
             ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            server.setSoTimeout(60_000);
            SecretKey key = key();
            CompletableFuture<MemoryMigration.Arrival> receiver = CompletableFuture.supplyAsync(() -> {
                try (Socket s = server.accept()) {
                    s.setSoTimeout(60_000);
                    return MemoryMigration.receive(s.getInputStream(), s.getOutputStream(), key,
                            new Snapshot.ReplayGuard(), d -> new MemoryMigration.Destination(d.create(), owner(), check()));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, threads);
            MemoryMigration.Report report;
            try (Socket s = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort())) {
                s.setSoTimeout(60_000);
                report = MemoryMigration.send(source.binding(), source.workload(), List.of(source.workload()),
                        new OtherHostClock(s.getInputStream(), otherHostsClock), s.getOutputStream(), key,
                        MemoryMigration.Options.defaults());
            }
            try (var memory = receiver.get(60, TimeUnit.SECONDS).memory()) {
                assertThat(memory.size()).isEqualTo(SIZE);
                assertThat(report.pausedToRestoredNs()).isPositive().isLessThanOrEqualTo(report.totalNs());
                // The test's own timeout bounds the whole migration: no clock of another host leaks in.
                assertThat(report.totalNs()).isLessThan(TimeUnit.SECONDS.toNanos(180));
            }
        }
    }

    /** Cuts land in the header, the description, the first round and near the end. */
    @ParameterizedTest
    @ValueSource(longs = {0, 10, 100, 300, 5_000, 700_000, 1_500_000})
    void aCutStreamLeavesTheSourceUsableAndTheDestinationEmpty(long cutAt) throws Exception {
        attack(Tamper.cut(cutAt), key(), null);
    }

    @ParameterizedTest
    @ValueSource(longs = {0, 20, 60, 200, 5_000, 300_000, 1_000_000})
    void anAlteredByteLeavesTheSourceUsableAndTheDestinationEmpty(long flipAt) throws Exception {
        attack(Tamper.flip(flipAt), key(), null);
    }

    @Test
    void aWrongKeyLeavesTheSourceUsableAndTheDestinationEmpty() throws Exception {
        attack(Tamper.NONE, key(), key());
    }

    /**
     * Runs a migration that must fail, then checks both ends: the receiver refused with
     * EBADMSG (or saw the channel go), the source's workload writes again, every source page
     * still holds what the workload last wrote, the destination's file is closed, and a second
     * migration of the same source succeeds.
     */
    private void attack(Tamper tamper, SecretKey sendKey, SecretKey receiveKey) throws Exception {
        try (Source source = Source.of(Backing.MEMFD, SIZE, owner(), 0.5, 20_000)) {
            Outcome o = MigrationHarness.migrate(source, List.of(source.workload()), sendKey,
                    receiveKey == null ? sendKey : receiveKey, tamper, MemoryMigrationTest::owner,
                    MemoryMigrationTest::check, MemoryMigration.Options.defaults());
            assertThat(o.arrival()).as("the destination took nothing").isNull();
            assertThat(o.sendFailure()).as("the source saw the migration fail").isInstanceOf(IOException.class);
            assertThat(o.receiveFailure()).isNotNull();
            if (o.receiveFailure() instanceof GuestMemoryException e) {
                assertThat(e.errno()).isIn(Errno.EBADMSG);
            } else {
                assertThat(o.receiveFailure()).isInstanceOf(IOException.class);
            }
            if (o.built() != null) {
                assertThat(o.built().memory().isClosed()).as("the destination's file is closed").isTrue();
            }
            assertThat(source.memory().isClosed()).isFalse();
            long before = source.workload().writes();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (source.workload().writes() == before && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            assertThat(source.workload().writes()).as("the workload writes again").isGreaterThan(before);
            assertThat(source.selfCheck()).isEmpty();
            SecretKey key = key();
            Outcome again = MigrationHarness.migrate(source, List.of(source.workload()), key, key, Tamper.NONE,
                    MemoryMigrationTest::owner, MemoryMigrationTest::check, MemoryMigration.Options.defaults());
            assertThat(again.sendFailure()).isNull();
            try (var memory = again.arrival().memory()) {
                assertThat(memory.size()).isEqualTo(SIZE);
                assertThat(verify(again.arrival())).isEmpty();
            }
        }
    }

    @Test
    void aDestinationThatTakesOtherStatesRefusesBeforeAnyPage() throws Exception {
        try (Source source = Source.of(Backing.MEMFD, SIZE, owner(), 0.2, 1_000)) {
            SecretKey key = key();
            Outcome o = MigrationHarness.migrate(source, List.of(source.workload()), key, key, Tamper.NONE,
                    MemoryMigrationTest::owner, List::of, MemoryMigration.Options.defaults());
            assertThat(o.receiveFailure()).isInstanceOfSatisfying(GuestMemoryException.class,
                    e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            assertThat(o.built().memory().isClosed()).isTrue();
            assertThat(o.sendFailure()).isInstanceOf(IOException.class);
            assertThat(source.selfCheck()).isEmpty();
        }
    }

    @Test
    void aStateItsObjectRefusesClosesTheDestination() throws Exception {
        try (Source source = Source.of(Backing.MEMFD, SIZE, owner(), 0.2, 1_000)) {
            SecretKey key = key();
            // The source's running workload takes no state: it stands for a destination object that refuses one.
            try (Source other = Source.of(Backing.MEMFD, SIZE, owner(), 0, 0)) {
                Outcome o = MigrationHarness.migrate(source, List.of(source.workload()), key, key, Tamper.NONE,
                        MemoryMigrationTest::owner, () -> List.of(other.workload()), MemoryMigration.Options.defaults());
                assertThat(o.receiveFailure()).isInstanceOfSatisfying(GuestMemoryException.class,
                        e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
                assertThat(o.built().memory().isClosed()).isTrue();
                assertThat(o.sendFailure()).isInstanceOf(IOException.class);
                assertThat(source.selfCheck()).isEmpty();
            }
        }
    }

    @Test
    void nullArgumentsAreRefusedWithEinvalAndSendNothing() throws Exception {
        try (Source source = Source.of(Backing.MEMFD, SIZE, owner(), 0.1, 0)) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayInputStream in = new ByteArrayInputStream(new byte[0]);
            SecretKey key = key();
            var o = MemoryMigration.Options.defaults();
            List<ThrowingCall> calls = List.of(
                    () -> MemoryMigration.send(null, source.workload(), List.of(), in, out, key, o),
                    () -> MemoryMigration.send(source.binding(), null, List.of(), in, out, key, o),
                    () -> MemoryMigration.send(source.binding(), source.workload(), null, in, out, key, o),
                    () -> MemoryMigration.send(source.binding(), source.workload(), java.util.Arrays.asList((CarriedState) null), in, out, key, o),
                    () -> MemoryMigration.send(source.binding(), source.workload(), List.of(), null, out, key, o),
                    () -> MemoryMigration.send(source.binding(), source.workload(), List.of(), in, null, key, o),
                    () -> MemoryMigration.send(source.binding(), source.workload(), List.of(), in, out, null, o),
                    () -> MemoryMigration.send(source.binding(), source.workload(), List.of(), in, out, key, null),
                    () -> MemoryMigration.receive(null, out, key, new Snapshot.ReplayGuard(), d -> null),
                    () -> MemoryMigration.receive(in, null, key, new Snapshot.ReplayGuard(), d -> null),
                    () -> MemoryMigration.receive(in, out, null, new Snapshot.ReplayGuard(), d -> null),
                    () -> MemoryMigration.receive(in, out, key, null, d -> null),
                    () -> MemoryMigration.receive(in, out, key, new Snapshot.ReplayGuard(), null));
            for (ThrowingCall call : calls) {
                assertThatThrownBy(call::run).isInstanceOfSatisfying(GuestMemoryException.class,
                        e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
            }
            assertThat(out.size()).isZero();
            assertThat(source.selfCheck()).isEmpty();
        }
    }

    @Test
    void optionsRefuseNoRoundsAndNegativeThresholds() {
        assertThatThrownBy(() -> new MemoryMigration.Options(0, 0, (r, b) -> { }))
                .isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> new MemoryMigration.Options(1, -1, (r, b) -> { }))
                .isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void aWorkloadCheckFindsAChangedPage() {
        try (Source source = Source.of(Backing.MEMFD, SIZE, owner(), 1.0, 0)) {
            PageWorkload.Check check = PageWorkload.check();
            check.importState(source.workload().exportState());
            assertThat(check.verify(source.binding())).isEmpty();
            source.binding().pages().set(java.lang.foreign.ValueLayout.JAVA_BYTE, 3 * PAGE + 17, (byte) 0x55);
            assertThat(check.verify(source.binding())).singleElement().asString().contains("page 3 ");
            assertThatThrownBy(() -> check.importState(new byte[7])).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> source.workload().importState(new byte[0])).isInstanceOf(IllegalArgumentException.class);
        }
    }

    @FunctionalInterface
    interface ThrowingCall {
        void run() throws Exception;
    }
}
