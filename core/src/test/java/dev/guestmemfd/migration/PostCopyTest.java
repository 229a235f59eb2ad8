package dev.guestmemfd.migration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostAccessFault;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Owner;
import dev.guestmemfd.PageRun;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Post-copy between two ends in one JVM over loopback, through a relay that knows the
 * messages' framing and can cut the source's messages off, flip a byte in one, or send one
 * twice, as an attacker in the path or a dying source would.
 */
@Timeout(120)
class PostCopyTest {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final Duration WAIT = Duration.ofSeconds(20);
    private static final int SOCKET_TIMEOUT_MS = 30_000;

    /** What the relay does to the source's messages (by their number, from 0); -1: nothing. */
    record Tamper(int cutBefore, int flipIn, int replay) {
        static final Tamper NONE = new Tamper(-1, -1, -1);
    }

    /** Both ends of one migration; the destination's file is closed by the test. */
    record Run(PostCopy.Report report, Throwable sendFailure, PostCopy.Arrival arrival, Throwable receiveFailure,
               GuestMemory built) {
    }

    /** Runs a post-copy migration; {@code atDestination} runs on the arrival while the source serves. */
    private static Run migrate(MigrationHarness.Source source, SecretKey sendKey, SecretKey receiveKey, Tamper tamper,
                               java.util.function.Consumer<PostCopy.Arrival> atDestination) throws Exception {
        AtomicReference<GuestMemory> built = new AtomicReference<>();
        InetAddress loopback = InetAddress.getLoopbackAddress();
        try (ExecutorService threads = Executors.newCachedThreadPool();
             ServerSocket destination = new ServerSocket(0, 1, loopback);
             ServerSocket relay = new ServerSocket(0, 1, loopback)) {
            destination.setSoTimeout(SOCKET_TIMEOUT_MS);
            relay.setSoTimeout(SOCKET_TIMEOUT_MS);
            CompletableFuture<Socket> accepted = new CompletableFuture<>();
            CompletableFuture<PostCopy.Arrival> receiver = CompletableFuture.supplyAsync(() -> {
                Socket s = null;
                try {
                    s = destination.accept();
                    accepted.complete(s);
                    s.setSoTimeout(SOCKET_TIMEOUT_MS);
                    PostCopy.Arrival a = PostCopy.receive(s.getInputStream(), s.getOutputStream(), receiveKey, d -> {
                        GuestMemory m = d.create();
                        built.set(m);
                        return new MemoryMigration.Destination(m, new Owner() { }, List.of(PageWorkload.check()));
                    }, WAIT);
                    Socket end = s;
                    threads.execute(() -> closeOnFailure(a, end));
                    atDestination.accept(a);
                    return a;
                } catch (IOException e) {
                    closeQuietly(s);
                    throw new java.io.UncheckedIOException(e);
                } catch (RuntimeException e) {
                    closeQuietly(s);
                    throw e;
                }
            }, threads);
            CompletableFuture<Void> relaying = CompletableFuture.runAsync(() -> LoopbackRelay.relayOne(relay, destination,
                    SOCKET_TIMEOUT_MS, threads, (in, out) -> copyFrames(in, out, tamper),
                    (in, out) -> copyFrames(in, out, Tamper.NONE)), threads);
            PostCopy.Report report = null;
            Throwable sendFailure = null;
            try (Socket s = new Socket(loopback, relay.getLocalPort())) {
                s.setSoTimeout(SOCKET_TIMEOUT_MS);
                report = PostCopy.send(source.binding(), source.workload(), List.of(source.workload()), s.getInputStream(),
                        s.getOutputStream(), sendKey, WAIT);
            } catch (IOException | RuntimeException e) {
                sendFailure = e;
            }
            PostCopy.Arrival arrival = null;
            Throwable receiveFailure = null;
            try {
                arrival = receiver.get(60, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                receiveFailure = e.getCause() instanceof java.io.UncheckedIOException u ? u.getCause() : e.getCause();
            }
            relaying.get(60, TimeUnit.SECONDS);
            if (arrival != null) {
                // The destination's own reader may not have taken the source's last message off
                // the socket yet: closing it under that reader would be a break of the test's making.
                try {
                    arrival.restore().await(WAIT);
                } catch (GuestMemoryException failed) {
                    // the test looks at the restore's failure itself
                }
            }
            if (accepted.isDone()) {
                accepted.join().close();
            }
            return new Run(report, sendFailure, arrival, receiveFailure, built.get());
        }
    }

    /** Copies u32-length-framed messages, cut, flipped or replayed as {@code tamper} says. */
    private static void copyFrames(InputStream from, OutputStream to, Tamper tamper) throws IOException {
        DataInputStream in = new DataInputStream(from);
        DataOutputStream out = new DataOutputStream(to);
        for (int n = 0; ; n++) {
            int length = in.readInt();
            byte[] body = new byte[length];
            in.readFully(body);
            if (n == tamper.cutBefore()) {
                break;
            }
            if (n == tamper.flipIn()) {
                body[length / 2] ^= 0x01;
            }
            for (int copies = n == tamper.replay() ? 2 : 1; copies > 0; copies--) {
                out.writeInt(length);
                out.write(body);
            }
            out.flush();
        }
    }

    /**
     * Closes the destination's end once its restore fails, as a destination that gives up
     * would: the source learns it from the channel's close at once, not at its own timeout.
     */
    private static void closeOnFailure(PostCopy.Arrival arrival, Socket end) {
        try {
            arrival.restore().await(WAIT);
        } catch (GuestMemoryException failed) {
            closeQuietly(end);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** A destination that refused the stream closes its end at once, as above. */
    private static void closeQuietly(Socket s) {
        if (s == null) {
            return;
        }
        try {
            s.close();
        } catch (IOException e) {
            // already closed
        }
    }

    private static long allocatedPages(GuestMemory memory) {
        return memory.pageRuns().stream().filter(PageRun::allocated).mapToLong(PageRun::length).sum() / PAGE;
    }

    private static void closeArrival(Run run) {
        if (run.arrival() != null) {
            run.arrival().restore().close();
        }
        if (run.built() != null) {
            run.built().close();
        }
    }

    @Test
    void everyPageStateArrivesAndEachExtentIsServedOnce() throws Exception {
        try (MigrationHarness.Source source = MigrationHarness.Source.of(Backing.MEMFD, 8L << 20, new Owner() { }, 0.6, 0)) {
            // a poisoned page among the filled ones: it travels as a mark, without bytes
            long failed = source.memory().pageRuns().stream().filter(PageRun::allocated).findFirst().orElseThrow().offset();
            source.memory().reportMemoryFailure(failed);
            long pages = allocatedPages(source.memory()) - 1;
            List<PageRun> before = source.memory().pageRuns();
            Run run = migrate(source, KEY, KEY, Tamper.NONE, a -> { });
            try {
                assertThat(run.sendFailure()).isNull();
                assertThat(run.receiveFailure()).isNull();
                PostCopy.Arrival arrival = run.arrival();
                assertThat(arrival.restore().await(WAIT)).isTrue();
                assertThat(run.report().pagesServed()).isEqualTo(pages);
                assertThat(arrival.restore().stats().pagesFetched()).isEqualTo(pages);
                assertThat(arrival.memory().isPoisoned(failed)).isTrue();
                assertThat(arrival.memory().pageRuns()).isEqualTo(before);
                PageWorkload.Check check = (PageWorkload.Check) arrival.carried().getFirst();
                List<String> problems = check.verify(arrival.binding());
                // the poisoned page reads zero at the destination (no bytes travel for a failed page)
                assertThat(problems).allMatch(p -> p.startsWith("page " + failed / PAGE + " "));
            } finally {
                closeArrival(run);
            }
        }
    }

    private static final SecretKey KEY = MigrationHarness.key();

    @Test
    void pagesTouchedWhilePagesMoveArriveOnceWithTheirBytes() throws Exception {
        try (MigrationHarness.Source source = MigrationHarness.Source.of(Backing.MEMFD, 32L << 20, new Owner() { }, 0.9, 2000)) {
            long pages;
            AtomicReference<byte[]> seen = new AtomicReference<>();
            AtomicReference<byte[]> seenPrivate = new AtomicReference<>();
            long[] probe = new long[2];
            // the last shared and last private allocated pages: the pull reaches them last
            List<PageRun> runs = source.memory().pageRuns();
            for (PageRun r : runs.reversed()) {
                if (r.allocated() && r.attribute() == Attribute.SHARED && probe[0] == 0) {
                    probe[0] = r.offset() + r.length() - PAGE;
                }
                if (r.allocated() && r.attribute() == Attribute.PRIVATE && probe[1] == 0) {
                    probe[1] = r.offset() + r.length() - PAGE;
                }
            }
            Run run = migrate(source, KEY, KEY, Tamper.NONE, a -> {
                try (HostMapping host = a.memory().map(0, a.memory().size()); Arena arena = Arena.ofConfined()) {
                    MemorySegment page = arena.allocate(PAGE);
                    host.read(probe[0], page);  // the library fetches first, urgently
                    seen.set(page.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
                    assertThatThrownBy(() -> host.read(probe[1], page)).isInstanceOf(HostAccessFault.class);
                    a.restore().fetch(probe[1], PAGE);  // the owner's own Java code fetches before it reads
                    seenPrivate.set(a.binding().pages().asSlice(probe[1], PAGE).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
                }
            });
            try {
                assertThat(run.receiveFailure()).isNull();
                assertThat(run.arrival().restore().failure()).isEmpty();
                assertThat(run.sendFailure()).isNull();
                pages = allocatedPages(source.memory());
                assertThat(run.arrival().restore().await(WAIT)).isTrue();
                assertThat(run.report().pagesServed()).isEqualTo(pages);
                assertThat(run.report().urgentServed()).isPositive();
                assertThat(run.arrival().restore().stats().pagesFetched()).isEqualTo(pages);
                byte[] want = source.binding().pages().asSlice(probe[0], PAGE).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
                byte[] wantPrivate = source.binding().pages().asSlice(probe[1], PAGE).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
                assertThat(seen.get()).isEqualTo(want);
                assertThat(seenPrivate.get()).isEqualTo(wantPrivate);
                PageWorkload.Check check = (PageWorkload.Check) run.arrival().carried().getFirst();
                assertThat(check.verify(run.arrival().binding())).isEmpty();
                // after the move, the private page is still not the host's
                try (HostMapping host = run.arrival().memory().map(0, run.arrival().memory().size());
                     Arena arena = Arena.ofConfined()) {
                    assertThatThrownBy(() -> host.read(probe[1], arena.allocate(PAGE))).isInstanceOf(HostAccessFault.class);
                }
            } finally {
                closeArrival(run);
            }
        }
    }

    @Test
    void anAlteredMessageEndsItAndTheSourceCarriesOn() throws Exception {
        for (int flip : new int[] {1, 4}) {  // the layout; a page message
            try (MigrationHarness.Source source = MigrationHarness.Source.of(Backing.MEMFD, 4L << 20, new Owner() { }, 0.5, 500)) {
                Run run = migrate(source, KEY, KEY, new Tamper(-1, flip, -1), a -> { });
                try {
                    assertThat(run.sendFailure()).as("flip in message %d", flip).isNotNull();
                    Throwable atDestination = run.receiveFailure() != null ? run.receiveFailure()
                            : awaitFailure(run.arrival());
                    assertThat(errnoOf(atDestination)).as("flip in message %d: %s", flip, atDestination)
                            .isIn(Errno.EBADMSG, Errno.EIO);
                    assertThat(atDestination.toString()).contains("altered");
                    assertThat(source.selfCheck()).isEmpty();  // resumed, whole
                    assertThat(source.workload().writes()).isNotNegative();
                } finally {
                    closeArrival(run);
                }
            }
        }
    }

    @Test
    void aReplayedMessageIsRefused() throws Exception {
        try (MigrationHarness.Source source = MigrationHarness.Source.of(Backing.MEMFD, 4L << 20, new Owner() { }, 0.5, 0)) {
            Run run = migrate(source, KEY, KEY, new Tamper(-1, -1, 3), a -> { });
            try {
                Throwable atDestination = run.receiveFailure() != null ? run.receiveFailure() : awaitFailure(run.arrival());
                assertThat(atDestination.toString()).contains("replayed");
                assertThat(run.sendFailure()).isNotNull();
                assertThat(source.selfCheck()).isEmpty();
            } finally {
                closeArrival(run);
            }
        }
    }

    @Test
    void aWrongKeyIsRefusedBeforeAnythingIsBuilt() throws Exception {
        try (MigrationHarness.Source source = MigrationHarness.Source.of(Backing.MEMFD, 1L << 20, new Owner() { }, 0.5, 0)) {
            Run run = migrate(source, KEY, MigrationHarness.key(), Tamper.NONE, a -> { });
            assertThat(run.receiveFailure()).isInstanceOf(GuestMemoryException.class);
            assertThat(((GuestMemoryException) run.receiveFailure()).errno()).isEqualTo(Errno.EBADMSG);
            assertThat(run.built()).isNull();
            assertThat(run.sendFailure()).isNotNull();
            assertThat(source.selfCheck()).isEmpty();
        }
    }

    @Test
    void aSourceThatDiesMidWayStopsTheDestinationWithAClearError() throws Exception {
        try (MigrationHarness.Source source = MigrationHarness.Source.of(Backing.MEMFD, 32L << 20, new Owner() { }, 0.9, 0)) {
            long last = source.memory().pageRuns().reversed().stream()
                    .filter(r -> r.allocated() && r.attribute() == Attribute.SHARED).findFirst().orElseThrow().offset();
            AtomicReference<Throwable> blocked = new AtomicReference<>();
            // the source's messages: DESCRIBE, LAYOUT, then pages: it dies before the first page
            // arrives, while the destination's thread waits for it
            Run run = migrate(source, KEY, KEY, new Tamper(2, -1, -1), a -> {
                try (HostMapping host = a.memory().map(0, a.memory().size()); Arena arena = Arena.ofConfined()) {
                    host.read(last, arena.allocate(PAGE));
                } catch (RuntimeException e) {
                    blocked.set(e);
                }
            });
            try {
                assertThat(run.receiveFailure()).isNull();
                assertThat(blocked.get()).isInstanceOf(GuestMemoryException.class);
                assertThat(((GuestMemoryException) blocked.get()).errno()).isEqualTo(Errno.EIO);
                assertThat(blocked.get().getMessage()).contains("source still holds every page");
                assertThatThrownBy(() -> run.arrival().restore().await(WAIT)).isInstanceOf(GuestMemoryException.class)
                        .extracting(e -> ((GuestMemoryException) e).errno()).isEqualTo(Errno.EIO);
                assertThat(run.sendFailure()).isNotNull();
                assertThat(source.selfCheck()).isEmpty();  // the source holds every page and runs on
            } finally {
                closeArrival(run);
            }
        }
    }

    private static Throwable awaitFailure(PostCopy.Arrival arrival) {
        try {
            arrival.restore().await(WAIT);
            return arrival.restore().failure().orElseThrow(() -> new AssertionError("the restore completed"));
        } catch (GuestMemoryException e) {
            return e;
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
    }

    private static Errno errnoOf(Throwable t) {
        return t instanceof GuestMemoryException g ? g.errno() : null;
    }

}
