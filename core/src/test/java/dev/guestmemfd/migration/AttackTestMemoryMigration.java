package dev.guestmemfd.migration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

import javax.crypto.SecretKey;
import javax.crypto.spec.SecretKeySpec;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Content;
import dev.guestmemfd.Errno;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Owner;
import dev.guestmemfd.Snapshot;

/**
 * Attacks on the receiving end of a memory-only migration: one genuine conversation is
 * recorded, then replayed, altered, cut and opened with another key; and a destination that
 * builds the wrong file. The receiver must refuse each with its errno and hold nothing.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class AttackTestMemoryMigration {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final long SIZE = 32 * PAGE;
    private static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
    private static final SecretKey KEY = new SecretKeySpec(new byte[32], "AES");
    private static byte[] recorded;
    private static final Snapshot.ReplayGuard FIRST = new Snapshot.ReplayGuard();

    private static final GuestActivity IDLE = new GuestActivity() {
        @Override
        public void pause() {
        }

        @Override
        public void resume() {
        }

        @Override
        public BitSet written() {
            return new BitSet();
        }
    };

    /** Files built by a destination, to check that a refused migration closed them. */
    private final List<GuestMemory> built = new ArrayList<>();

    private Function<FileDescription, MemoryMigration.Destination> destination(long size) {
        return d -> {
            GuestMemory m = size == d.size() ? d.create() : GuestMemory.create(size, d.flagBits(), d.backing());
            built.add(m);
            return new MemoryMigration.Destination(m, new Owner() { }, List.of());
        };
    }

    @BeforeAll
    static void recordOneGenuineMigration() throws Exception {
        try (GuestMemory source = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
                Binding owner = source.bind(new Owner() { }, 0, SIZE);
                ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            try (HostMapping map = source.map(0, SIZE)) {
                byte[] data = new byte[(int) SIZE];
                Arrays.fill(data, (byte) 0x7E);
                map.write(0, data);
            }
            source.convert(8 * PAGE, 8 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            CompletableFuture<MemoryMigration.Arrival> receiver = CompletableFuture.supplyAsync(() -> {
                try (Socket s = server.accept()) {
                    return MemoryMigration.receive(s.getInputStream(), s.getOutputStream(), KEY, FIRST,
                            d -> new MemoryMigration.Destination(d.create(), new Owner() { }, List.of()));
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            ByteArrayOutputStream copy = new ByteArrayOutputStream();
            try (Socket s = new Socket(server.getInetAddress(), server.getLocalPort())) {
                s.setSoTimeout(20_000);
                OutputStream tee = new FilterOutputStream(s.getOutputStream()) {
                    @Override
                    public void write(byte[] b, int off, int len) throws IOException {
                        copy.write(b, off, len);
                        out.write(b, off, len);
                    }

                    @Override
                    public void write(int b) throws IOException {
                        copy.write(b);
                        out.write(b);
                    }
                };
                MemoryMigration.send(owner, IDLE, List.of(), s.getInputStream(), tee, KEY,
                        MemoryMigration.Options.defaults());
            }
            MemoryMigration.Arrival arrival = receiver.get(30, TimeUnit.SECONDS);
            try (GuestMemory arrived = arrival.memory()) {
                assertThat(arrived.attribute(9 * PAGE)).isEqualTo(Attribute.PRIVATE);
                try (HostMapping map = arrived.map(0, PAGE)) {
                    assertThat(map.read(0, 8)).containsOnly((byte) 0x7E);
                }
                arrival.binding().close();
            }
            recorded = copy.toByteArray();
        }
    }

    private MemoryMigration.Arrival receive(byte[] stream, SecretKey key, Snapshot.ReplayGuard guard, long size) throws IOException {
        return MemoryMigration.receive(new ByteArrayInputStream(stream), new ByteArrayOutputStream(), key, guard,
                destination(size));
    }

    private void assertRefusedAndNothingHeld(ThrowingCall call, Errno errno) {
        assertThatThrownBy(call::run).isInstanceOfSatisfying(GuestMemoryException.class,
                e -> assertThat(e.errno()).isEqualTo(errno));
        for (GuestMemory m : built) {
            assertThat(m.isClosed()).as("the destination holds nothing").isTrue();
        }
    }

    interface ThrowingCall {
        void run() throws Exception;
    }

    @Test
    void theRecordedStreamIsReceivableOnceMoreThroughAFreshGuard() throws Exception {
        MemoryMigration.Arrival a = receive(recorded, KEY, new Snapshot.ReplayGuard(), SIZE);
        try (GuestMemory m = a.memory()) {
            assertThat(m.attribute(8 * PAGE)).isEqualTo(Attribute.PRIVATE);
            assertThat(a.binding().pages().get(java.lang.foreign.ValueLayout.JAVA_BYTE, 9 * PAGE)).isEqualTo((byte) 0x7E);
        }
    }

    @Test
    void aReplayThroughTheSameGuardIsEalready() {
        assertRefusedAndNothingHeld(() -> receive(recorded, KEY, FIRST, SIZE), Errno.EALREADY);
    }

    @Test
    void everyAlteredByteIsEbadmsgAndTheDestinationHoldsNothing() {
        // a spread of positions: description, page records, sealed records, the end
        int n = recorded.length;
        for (int at : new int[] {0, 9, 40, n / 7, n / 3, n / 2, 2 * n / 3, n - 40, n - 1}) {
            byte[] altered = recorded.clone();
            altered[at] ^= 0x01;
            built.clear();
            assertThatThrownBy(() -> receive(altered, KEY, new Snapshot.ReplayGuard(), SIZE))
                    .as("flip at %d of %d", at, n)
                    .isInstanceOfSatisfying(GuestMemoryException.class,
                            e -> assertThat(e.errno()).isIn(Errno.EBADMSG));
            for (GuestMemory m : built) {
                assertThat(m.isClosed()).isTrue();
            }
        }
    }

    @Test
    void aCutStreamIsEbadmsgAndTheDestinationHoldsNothing() {
        for (int keep : new int[] {0, 1, 30, recorded.length / 2, recorded.length - 1}) {
            byte[] cut = Arrays.copyOf(recorded, keep);
            built.clear();
            assertThatThrownBy(() -> receive(cut, KEY, new Snapshot.ReplayGuard(), SIZE))
                    .as("cut to %d", keep)
                    .isInstanceOfSatisfying(GuestMemoryException.class,
                            e -> assertThat(e.errno()).isEqualTo(Errno.EBADMSG));
            for (GuestMemory m : built) {
                assertThat(m.isClosed()).isTrue();
            }
        }
    }

    @Test
    void anotherKeyIsEbadmsg() {
        byte[] other = new byte[32];
        other[31] = 1;
        assertRefusedAndNothingHeld(() -> receive(recorded, new SecretKeySpec(other, "AES"), new Snapshot.ReplayGuard(), SIZE),
                Errno.EBADMSG);
    }

    @Test
    void aDestinationOfAnotherSizeIsEinvalAndIsClosed() {
        assertRefusedAndNothingHeld(() -> receive(recorded, KEY, new Snapshot.ReplayGuard(), 2 * SIZE), Errno.EINVAL);
    }

    @Test
    void carriedKindsTheDescriptionDoesNotNameAreEinval() {
        CarriedState extra = new CarriedState() {
            @Override
            public String kind() {
                return "attack";
            }

            @Override
            public byte[] exportState() {
                return new byte[0];
            }

            @Override
            public void importState(byte[] state) {
            }
        };
        assertThatThrownBy(() -> MemoryMigration.receive(new ByteArrayInputStream(recorded), new ByteArrayOutputStream(), KEY,
                new Snapshot.ReplayGuard(), d -> {
                    GuestMemory m = d.create();
                    built.add(m);
                    return new MemoryMigration.Destination(m, new Owner() { }, List.of(extra));
                })).isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        assertThat(built).allMatch(GuestMemory::isClosed);
    }

    @Test
    void nullsAreEinval() {
        ByteArrayInputStream in = new ByteArrayInputStream(recorded);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Snapshot.ReplayGuard g = new Snapshot.ReplayGuard();
        assertRefusedAndNothingHeld(() -> MemoryMigration.receive(null, out, KEY, g, destination(SIZE)), Errno.EINVAL);
        assertRefusedAndNothingHeld(() -> MemoryMigration.receive(in, null, KEY, g, destination(SIZE)), Errno.EINVAL);
        assertRefusedAndNothingHeld(() -> MemoryMigration.receive(in, out, null, g, destination(SIZE)), Errno.EINVAL);
        assertRefusedAndNothingHeld(() -> MemoryMigration.receive(in, out, KEY, null, destination(SIZE)), Errno.EINVAL);
        assertRefusedAndNothingHeld(() -> MemoryMigration.receive(in, out, KEY, g, null), Errno.EINVAL);
        assertThat(built).isEmpty();
    }

    @Test
    void sendingAClosedFileIsEbadfAndAPartialBindingEinval() throws Exception {
        GuestMemory m = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD);
        Binding half = m.bind(new Owner() { }, 0, SIZE / 2);
        ByteArrayOutputStream sink = new ByteArrayOutputStream();
        assertThatThrownBy(() -> MemoryMigration.send(half, IDLE, List.of(), new ByteArrayInputStream(new byte[] {1}), sink, KEY,
                MemoryMigration.Options.defaults()))
                .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        Binding whole = m.bind(new Owner() { }, SIZE / 2, SIZE / 2);
        assertThat(whole.isClosed()).isFalse();
        m.close();
        assertThatThrownBy(() -> MemoryMigration.send(half, IDLE, List.of(), new ByteArrayInputStream(new byte[] {1}), sink, KEY,
                MemoryMigration.Options.defaults()))
                .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isIn(Errno.EBADF, Errno.EINVAL));
        assertThatThrownBy(() -> MemoryMigration.send(null, IDLE, List.of(), new ByteArrayInputStream(new byte[] {1}), sink, KEY,
                MemoryMigration.Options.defaults()))
                .isInstanceOfSatisfying(GuestMemoryException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
    }
}
