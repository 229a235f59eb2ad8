package dev.guestmemfd.migration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Owner;
import dev.guestmemfd.PageRun;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Post-copy over the authenticated channel: it completes, and a source that closes its end mid-way stops the destination. */
@Timeout(120)
class PostCopyChannelTest extends LoopbackPeers {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final Duration TIMEOUT = Duration.ofSeconds(20);

    private static MemoryMigration.Destination build(FileDescription d) {
        return new MemoryMigration.Destination(d.create(), new Owner() { }, List.of(PageWorkload.check()));
    }

    @Test
    void aFileMovesByPostCopyOverTheAuthenticatedChannel() throws Exception {
        try (MigrationHarness.Source from = MigrationHarness.Source.of(Backing.MEMFD, 16L << 20, new Owner() { }, 0.7, 1000);
             MigrationListener listener = destinationListener()) {
            Future<PostCopy.Arrival> received = pool.submit(() -> {
                MigrationChannel dst = listener.accept(TIMEOUT);
                PostCopy.Arrival a = PostCopy.receive(dst.in(), dst.out(), dst.sealingKey(), PostCopyChannelTest::build, TIMEOUT);
                pool.submit(() -> {
                    a.restore().awaitResident(TIMEOUT.multipliedBy(2));
                    a.restore().await(TIMEOUT.multipliedBy(2));
                    dst.close();
                    return null;
                });
                return a;
            });
            PostCopy.Report report;
            try (MigrationChannel src = MigrationChannel.connect(listener.address(), source, destinationPeer, TIMEOUT)) {
                report = PostCopy.send(from.binding(), from.workload(), List.of(from.workload()), src.in(), src.out(),
                        src.sealingKey(), TIMEOUT);
            }
            PostCopy.Arrival arrival = received.get(30, TimeUnit.SECONDS);
            try {
                assertThat(arrival.restore().await(TIMEOUT)).isTrue();
                long allocated = from.memory().pageRuns().stream().filter(PageRun::allocated).mapToLong(PageRun::length).sum();
                assertThat(report.pagesServed() * PAGE).isEqualTo(allocated);
                assertThat(((PageWorkload.Check) arrival.carried().getFirst()).verify(arrival.binding())).isEmpty();
            } finally {
                arrival.restore().close();
                arrival.memory().close();
            }
        }
    }

    /** Closes the channel as the source's third message (its first page) is written: the source dies mid-way. */
    private static final class DyingOut extends FilterOutputStream {
        private final MigrationChannel channel;
        private int messages;

        DyingOut(MigrationChannel channel) {
            super(channel.out());
            this.channel = channel;
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            if (len > 8 && ++messages == 3) {
                channel.close();
                throw new IOException("the source died");
            }
            out.write(b, off, len);
        }
    }

    @Test
    void aSourceThatClosesItsChannelMidWayStopsTheDestinationWithEio() throws Exception {
        try (MigrationHarness.Source from = MigrationHarness.Source.of(Backing.MEMFD, 16L << 20, new Owner() { }, 0.9, 0);
             MigrationListener listener = destinationListener()) {
            long last = from.memory().pageRuns().reversed().stream()
                    .filter(r -> r.allocated() && r.attribute() == Attribute.SHARED).findFirst().orElseThrow().offset();
            java.util.concurrent.atomic.AtomicReference<GuestMemory> built = new java.util.concurrent.atomic.AtomicReference<>();
            Future<Object[]> received = pool.submit(() -> {
                try (MigrationChannel dst = listener.accept(TIMEOUT)) {
                    PostCopy.Arrival a = PostCopy.receive(dst.in(), dst.out(), dst.sealingKey(), d -> {
                        MemoryMigration.Destination made = build(d);
                        built.set(made.memory());
                        return made;
                    }, TIMEOUT);
                    Throwable blocked = null;
                    try (HostMapping host = a.memory().map(0, a.memory().size()); Arena arena = Arena.ofConfined()) {
                        host.read(last, arena.allocate(PAGE));  // waits for a page that will not come
                    } catch (RuntimeException e) {
                        blocked = e;
                    }
                    return new Object[] {a, blocked};
                }
            });
            Throwable sent = null;
            try (MigrationChannel src = MigrationChannel.connect(listener.address(), source, destinationPeer, TIMEOUT)) {
                PostCopy.send(from.binding(), from.workload(), List.of(from.workload()), src.in(), new DyingOut(src),
                        src.sealingKey(), TIMEOUT);
            } catch (IOException e) {
                sent = e;
            }
            assertThat(sent).hasMessageContaining("died");
            Object[] outcome;
            try {
                outcome = received.get(60, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException beforeResuming) {
                // The destination's pull asks for pages as soon as the layout is in: the source
                // may die on its first page before the destination said it resumed. Then the
                // destination never resumes: a clear error, its file closed, the source whole.
                assertThat(beforeResuming.getCause()).isInstanceOf(IOException.class);
                assertThat(built.get()).isNotNull();
                assertThat(built.get().isClosed()).as("the destination holds nothing").isTrue();
                assertThat(from.selfCheck()).isEmpty();
                return;
            }
            PostCopy.Arrival arrival = (PostCopy.Arrival) outcome[0];
            try {
                assertThat(outcome[1]).isInstanceOf(GuestMemoryException.class);
                assertThat(((GuestMemoryException) outcome[1]).errno()).isEqualTo(Errno.EIO);
                assertThatThrownBy(() -> arrival.restore().await(TIMEOUT)).isInstanceOf(GuestMemoryException.class);
                // pages that did not come stay unreadable: no access reads a hole as zero
                try (HostMapping host = arrival.memory().map(0, arrival.memory().size()); Arena arena = Arena.ofConfined()) {
                    assertThatThrownBy(() -> host.read(last, arena.allocate(PAGE))).isInstanceOf(GuestMemoryException.class)
                            .extracting(e -> ((GuestMemoryException) e).errno()).isEqualTo(Errno.EIO);
                }
                assertThat(from.selfCheck()).isEmpty();  // the source resumed on every page
            } finally {
                arrival.restore().close();
                arrival.memory().close();
            }
        }
    }

}
