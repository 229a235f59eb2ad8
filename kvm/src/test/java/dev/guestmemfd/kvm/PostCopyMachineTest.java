package dev.guestmemfd.kvm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostAccessFault;
import dev.guestmemfd.testing.RequiresKvm;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A running counting guest moved by post-copy over loopback TCP: the destination runs it at
 * once and its pages follow; a channel cut mid-way stops the destination's vCPUs for good and
 * the source runs its guest on, holding every page.
 */
@RequiresKvm
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class PostCopyMachineTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long MEMORY = 16L << 20;
    static final long DATA = 8L << 20;
    static final long PRIVATE_START = 12L << 20;
    static final long PRIVATE_END = 14L << 20;

    /** A counting guest with the host's bytes above {@link #DATA}: every fourth page a hole, some private. */
    static Machine boot(Kvm kvm) {
        Machine machine = Machine.boot(kvm, Machine.Config.of(GuestProgram.COUNTER, Backing.MEMFD, 1).withMemorySize(MEMORY));
        for (long at = DATA; at < MEMORY; at += PAGE) {
            if ((at / PAGE) % 4 != 0) {
                byte[] bytes = new byte[(int) PAGE];
                java.util.Arrays.fill(bytes, LazyMachineLoadTest.fill(at));
                machine.hostMapping().write(at, bytes);
            }
        }
        machine.memory().convert(PRIVATE_START, PRIVATE_END - PRIVATE_START, Attribute.PRIVATE, Content.PRESERVE);
        return machine;
    }

    static CompletableFuture<LazyMachineLoad> destination(Kvm kvm, ServerSocket server) {
        CompletableFuture<LazyMachineLoad> landed = new CompletableFuture<>();
        Thread.ofPlatform().daemon().name("postcopy-destination").start(() -> {
            try (Socket socket = server.accept()) {
                LazyMachineLoad load = Migration.receivePostCopy(kvm, socket, Backing.MEMFD);
                landed.complete(load);
                // The socket must stay open while pages flow: wait for the restore to settle.
                try {
                    load.restore().await(Duration.ofSeconds(90));
                } catch (GuestMemoryException settledWithAFailure) {
                    // the test reads it from the restore
                }
            } catch (IOException | RuntimeException | InterruptedException e) {
                landed.completeExceptionally(e);
            }
        });
        return landed;
    }

    @Test
    void aRunningGuestMovesByPostCopyRunsAtOnceAndEndsWithTheSourcesMemory() throws Exception {
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
             Machine source = boot(kvm)) {
            CompletableFuture<LazyMachineLoad> landed = destination(kvm, server);
            Machine.Running running = source.start();
            Thread.sleep(300);
            Migration.Report report;
            try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort())) {
                report = Migration.send(running, socket, Migration.Options.defaults().withPostCopy(true));
            }
            assertThat(report.path()).isEqualTo(Migration.Path.POST_COPY);
            assertThat(report.roundBytes()).as("no page travels before the pause").isEmpty();
            assertThat(source.running()).as("the source's guest stays paused").isEmpty();
            try (LazyMachineLoad destination = landed.get(60, TimeUnit.SECONDS)) {
                assertThat(destination.eagerReason()).isEmpty();
                assertThat(destination.restore().await(Duration.ofSeconds(60))).isTrue();
                Thread.sleep(100);
                Machine.Outcome outcome = destination.pause();
                List<Long> before = MigrationTest.ticks(report.source().serial());
                LazyMachineLoadTest.assertCountsOnFrom(before.getLast(), outcome.serial());
                assertSameMemory(source, destination.machine());
                assertThatThrownBy(() -> destination.machine().hostMapping().read(PRIVATE_START, 8))
                        .isInstanceOf(HostAccessFault.class);
            }
        }
    }

    /** Every page's attribute and bytes (private ones through the owner's view) but the count page's. */
    static void assertSameMemory(Machine source, Machine destination) {
        long countPage = source.vcpus().getFirst().registers().rbx() / PAGE * PAGE;
        for (long at = 0; at < MEMORY; at += PAGE) {
            assertThat(destination.memory().attribute(at)).as("attribute at %d", at).isEqualTo(source.memory().attribute(at));
            if (at != countPage) {
                assertThat(LazyMachineLoadTest.ownerPage(destination, at).mismatch(LazyMachineLoadTest.ownerPage(source, at)))
                        .as("first differing byte of page %d", at).isEqualTo(-1);
            }
        }
    }

    /**
     * The channel is cut after {@code cutAfter} bytes from the source, while pages travel: the
     * destination's restore fails, its vCPUs stop for good, and the source's guest runs again on
     * its whole memory, counting on without a gap.
     */
    @Test
    void aChannelCutMidWayStopsTheDestinationAndTheSourceRunsOn() throws Exception {
        try (Kvm kvm = Kvm.open(); ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
             ServerSocket relay = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
             Machine source = boot(kvm)) {
            CompletableFuture<LazyMachineLoad> landed = destination(kvm, server);
            AtomicLong forwarded = new AtomicLong();
            cuttingRelay(relay, server.getLocalPort(), 2L << 20, forwarded);
            Machine.Running running = source.start();
            Thread.sleep(300);
            try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), relay.getLocalPort())) {
                assertThatThrownBy(() -> Migration.send(running, socket, Migration.Options.defaults().withPostCopy(true)))
                        .isInstanceOf(IOException.class);
            }
            assertThat(forwarded.get()).as("the cut came while pages travelled").isGreaterThanOrEqualTo(2L << 20);
            try (LazyMachineLoad destination = landed.get(60, TimeUnit.SECONDS)) {
                LazyMachineLoadTest.assertStoppedFor(destination, Errno.EIO);
            }
            Machine.Running again = source.running().orElseThrow(() -> new AssertionError("the source's guest does not run"));
            long ticksAtPause = MigrationTest.ticks(source.serial()).size();
            while (MigrationTest.ticks(source.serial()).size() < ticksAtPause + 5) {
                Thread.sleep(1);
            }
            Machine.Outcome outcome = again.pause();
            List<Long> ticks = MigrationTest.ticks(outcome.serial());
            for (int i = 0; i < ticks.size(); i++) {
                assertThat(ticks.get(i)).as("the source's tick %d", i).isEqualTo(i + 1L);
            }
        }
    }

    /** Forwards one connection to {@code port}, both ways; after {@code cutAfter} bytes from the client, closes both. */
    static void cuttingRelay(ServerSocket relay, int port, long cutAfter, AtomicLong forwarded) {
        Thread.ofPlatform().daemon().name("cutting-relay").start(() -> {
            try {
                Socket client = relay.accept();
                Socket target = new Socket(InetAddress.getLoopbackAddress(), port);
                Thread back = Thread.ofPlatform().daemon().start(() -> pump(target, client, Long.MAX_VALUE, new AtomicLong()));
                pump(client, target, cutAfter, forwarded);
                // The cut: both connections go at once, as when the network between the hosts breaks.
                try (client; target) {
                    back.join(10);
                }
            } catch (IOException | InterruptedException ignored) {
                // the test sees the cut from both ends
            }
        });
    }

    private static void pump(Socket from, Socket to, long limit, AtomicLong count) {
        byte[] buffer = new byte[1 << 14];
        try {
            InputStream in = from.getInputStream();
            OutputStream out = to.getOutputStream();
            for (int n; count.get() < limit && (n = in.read(buffer, 0, (int) Math.min(buffer.length, limit - count.get()))) > 0; ) {
                out.write(buffer, 0, n);
                out.flush();
                count.addAndGet(n);
            }
        } catch (IOException ignored) {
            // one side went: the other is closed by the relay
        }
    }
}
