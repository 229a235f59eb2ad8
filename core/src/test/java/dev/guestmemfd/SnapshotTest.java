package dev.guestmemfd;

import static dev.guestmemfd.Errors.assertErrno;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayInputStream;
import java.util.Arrays;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

class SnapshotTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long SIZE = 64 * PAGE;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();

    static SecretKey key() throws Exception {
        KeyGenerator g = KeyGenerator.getInstance("AES");
        g.init(256);
        return g.generateKey();
    }

    /** A file with every page state: absent, shared with content, private with content. */
    static GuestMemory source(Backing backing) {
        GuestMemory m = GuestMemory.create(SIZE, FLAGS | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0), backing);
        Binding owner = m.bind(new Owner() { }, 0, SIZE);
        OWNERS.put(m, owner);
        try (HostMapping host = m.map(0, SIZE)) {
            byte[] shared = new byte[(int) (3 * PAGE)];
            Arrays.fill(shared, (byte) 0x5a);
            host.write(4 * PAGE, shared);
        }
        m.convert(16 * PAGE, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        owner.pages().asSlice(16 * PAGE, 2 * PAGE).fill((byte) 0x5e);
        m.convert(40 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);  // private, never written: a hole
        return m;
    }

    @ParameterizedTest
    @EnumSource(value = Backing.class, names = {"MEMFD", "SECRET"})
    void everyPageStateSurvivesTheRoundTripAndPrivateBytesNeverTravelInTheClear(Backing backing) throws Exception {
        SecretKey key = key();
        byte[] stream;
        try (GuestMemory source = source(backing)) {
            stream = toBytes(bindingOf(source), key);
            assertThat(indexOf(stream, (byte) 0x5e, 64)).as("private bytes appear in the stream in the clear").isLessThan(0);
            assertThat(indexOf(stream, (byte) 0x5a, 64)).as("shared bytes travel as they are").isGreaterThan(0);
        }
        try (GuestMemory target = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD)) {
            Binding owner = target.bind(new Owner() { }, 0, SIZE);
            Snapshot.restore(owner, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard());
            assertThat(target.attribute(16 * PAGE)).isEqualTo(Attribute.PRIVATE);
            assertThat(target.attribute(4 * PAGE)).isEqualTo(Attribute.SHARED);
            assertThat(target.attribute(40 * PAGE)).as("a private hole stays private").isEqualTo(Attribute.PRIVATE);
            assertThat(target.attribute(41 * PAGE)).isEqualTo(Attribute.SHARED);
            assertThat(owner.pages().asSlice(16 * PAGE, 2 * PAGE).toArray(JAVA_BYTE)).containsOnly(0x5e);
            try (HostMapping host = target.map(0, SIZE)) {
                assertThat(host.read(4 * PAGE, (int) (3 * PAGE))).containsOnly(0x5a);
                assertErrno(() -> host.read(16 * PAGE, 1), "EFAULT");
            }
            if (backing == Backing.MEMFD) {
                assertThat(target.pageCounts().allocated()).as("holes stay holes").isEqualTo(5);
            }
        }
    }

    private static final java.util.Map<GuestMemory, Binding> OWNERS = new java.util.concurrent.ConcurrentHashMap<>();

    static Binding bindingOf(GuestMemory m) {
        return OWNERS.remove(m);
    }

    static byte[] toBytes(Binding owner, SecretKey key) throws java.io.IOException {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        Snapshot.write(owner, key, out);
        return out.toByteArray();
    }

    static int indexOf(byte[] data, byte value, int run) {
        int count = 0;
        for (int i = 0; i < data.length; i++) {
            count = data[i] == value ? count + 1 : 0;
            if (count == run) {
                return i;
            }
        }
        return -1;
    }

    @Test
    void corruptedTruncatedWrongKeyAndReplayedStreamsAreRefusedAndNothingIsRestored() throws Exception {
        SecretKey key = key();
        byte[] stream;
        try (GuestMemory source = source(Backing.MEMFD)) {
            stream = toBytes(bindingOf(source), key);
        }
        try (GuestMemory target = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD)) {
            Binding owner = target.bind(new Owner() { }, 0, SIZE);
            Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
            byte[] sharedFlipped = stream.clone();
            sharedFlipped[indexOf(stream, (byte) 0x5a, 64)] ^= 1;
            byte[] privateFlipped = stream.clone();
            privateFlipped[stream.length - 200] ^= 1;
            byte[] truncated = Arrays.copyOf(stream, stream.length / 2);
            byte[] badVersion = stream.clone();
            badVersion[11] = 9;
            for (byte[] bad : new byte[][] {sharedFlipped, privateFlipped, truncated, badVersion}) {
                assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(bad), guard), "EBADMSG");
            }
            assertErrno(() -> Snapshot.restore(owner, key(), new ByteArrayInputStream(stream), guard), "EBADMSG");
            assertThat(target.pageCounts().allocated()).as("nothing restored").isZero();
            assertThat(target.pageCounts().privates()).isZero();
            Snapshot.restore(owner, key, new ByteArrayInputStream(stream), guard);
            try (GuestMemory other = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD)) {
                Binding second = other.bind(new Owner() { }, 0, SIZE);
                assertErrno(() -> Snapshot.restore(second, key, new ByteArrayInputStream(stream), guard), "EALREADY");
                assertThat(other.pageCounts().allocated()).isZero();
            }
            assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()), "EINVAL");
        }
        try (GuestMemory wrongSize = GuestMemory.create(2 * SIZE, FLAGS, Backing.MEMFD)) {
            Binding owner = wrongSize.bind(new Owner() { }, 0, 2 * SIZE);
            assertErrno(() -> Snapshot.restore(owner, key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()), "EINVAL");
        }
    }

    /**
     * A pre-copy stream: every page once, then the library's changes since, the way a
     * migration sends rounds while the guest runs. The target ends equal to the source as it
     * is at the end, holes freed since the first round included.
     */
    @Test
    void laterRoundsOfChangedPagesReplaceEarlierOnes() throws Exception {
        SecretKey key = key();
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        try (GuestMemory source = source(Backing.MEMFD); ChangeLog changes = source.trackChanges()) {
            Binding owner = bindingOf(source);
            Snapshot.Writer writer = Snapshot.writer(java.util.List.of(owner), key, out);
            writer.writeState(new byte[] {1, 2, 3});
            changes.drain();
            writer.writeAll();
            try (HostMapping host = source.map(0, SIZE)) {
                host.write(30 * PAGE, new byte[] {7, 7, 7});              // newly allocated, shared
                host.write(5 * PAGE, new byte[] {9});                     // rewritten
            }
            source.punchHole(6 * PAGE, PAGE);                             // freed since round one
            source.convert(4 * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);  // now private, same bytes
            java.util.BitSet changed = changes.drain();
            assertThat(changed.stream().boxed().toList()).containsExactlyInAnyOrder(4, 5, 6, 30);
            writer.writePages(changed);
            assertThat(changes.drain().isEmpty()).as("a drain starts afresh").isTrue();
            writer.writeState(new byte[] {4});
            writer.finish();
        }
        try (GuestMemory target = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD)) {
            Binding owner = target.bind(new Owner() { }, 0, SIZE);
            java.util.List<byte[]> states = new java.util.ArrayList<>();
            Snapshot.Reader reader = Snapshot.reader(key, new ByteArrayInputStream(out.toByteArray()), new Snapshot.ReplayGuard());
            assertThat(reader.readState()).containsExactly(1, 2, 3);
            reader.restore(java.util.List.of(owner), states::add);
            assertThat(states).hasSize(1);
            assertThat(states.getFirst()).containsExactly(4);
            assertThat(target.attribute(4 * PAGE)).isEqualTo(Attribute.PRIVATE);
            assertThat(owner.pages().asSlice(4 * PAGE, PAGE).toArray(JAVA_BYTE)).containsOnly(0x5a);
            try (HostMapping host = target.map(0, SIZE)) {
                assertThat(host.read(5 * PAGE, 2)).containsExactly(9, 0x5a);
                assertThat(host.read(30 * PAGE, 4)).containsExactly(7, 7, 7, 0);
            }
            assertThat(target.pageCounts().allocated()).as("pages 4, 5, 16, 17, 30: page 6 was freed").isEqualTo(5);
        }
    }

    /** Host code under a lease or pin can write without asking: its pages count as changed at every drain. */
    @Test
    void theChangeLogSeesWhatTheLibraryDoesAndWhatLeasesMayDo() {
        try (GuestMemory m = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD)) {
            ChangeLog log = m.trackChanges();
            m.allocate(2 * PAGE, 2 * PAGE);
            m.convert(10 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            m.convert(10 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);  // no change, still logged once
            assertThat(log.drain().stream().boxed().toList()).containsExactly(2, 3, 10);
            try (HostMapping host = m.map(0, SIZE); Lease lease = host.lease(20 * PAGE, PAGE)) {
                assertThat(lease.fileOffset()).isEqualTo(20 * PAGE);
                assertThat(log.drain().stream().boxed().toList()).containsExactly(20);
                assertThat(log.drain().stream().boxed().toList()).as("still held").containsExactly(20);
                host.read(0, 8);
                assertThat(log.drain().stream().boxed().toList()).as("a read changes nothing").containsExactly(20);
            }
            assertThat(log.drain().isEmpty()).isTrue();
            log.close();
            assertErrno(log::drain, "EBADF");
        }
    }

    /** Page indexes in a change log are ints: a larger file is refused up front, never half-way through a change. */
    @Test
    void aChangeLogOfAFileBeyond8TiBIsRefusedUpFront() {
        try (GuestMemory huge = GuestMemory.create(16L << 40, Flag.INIT_SHARED.bit(), Backing.MEMFD)) {
            assertErrno(huge::trackChanges, "EFBIG");
            huge.convert((16L << 40) - PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            assertThat(huge.attribute((16L << 40) - PAGE)).isEqualTo(Attribute.PRIVATE);
        }
    }

    /**
     * A page converted to private while a round is being written (here: by the stream itself,
     * between two records of one shared run) is left for the next round, sealed; the shared
     * pages around it still go in this round, not one is lost.
     */
    @Test
    void aPageConvertedWhileARoundIsWrittenIsLeftForTheNextAndItsNeighboursStillGo() throws Exception {
        SecretKey key = key();
        long runPages = 2L * Snapshot.CHUNK / PAGE;  // a shared run of two records
        long size = runPages * PAGE;
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        try (GuestMemory source = GuestMemory.create(size, FLAGS, Backing.MEMFD); ChangeLog changes = source.trackChanges()) {
            Binding owner = source.bind(new Owner() { }, 0, size);
            for (long p = 0; p < runPages; p++) {
                owner.pages().asSlice(p * PAGE, PAGE).fill((byte) (p + 1));
            }
            long converted = Snapshot.CHUNK + 3 * PAGE;  // in the run's second record
            java.io.OutputStream converting = new java.io.FilterOutputStream(out) {
                private long written;

                @Override
                public void write(byte[] b, int off, int len) throws java.io.IOException {
                    out.write(b, off, len);
                    written += len;
                    if (written > Snapshot.CHUNK && source.attribute(converted) == Attribute.SHARED) {
                        source.convert(converted, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                    }
                }
            };
            Snapshot.Writer writer = Snapshot.writer(java.util.List.of(owner), key, converting);
            changes.drain();
            writer.writeAll();
            assertThat(source.attribute(converted)).as("converted mid-round").isEqualTo(Attribute.PRIVATE);
            assertThat(indexOf(out.toByteArray(), (byte) (converted / PAGE + 1), (int) PAGE))
                    .as("the converted page's bytes are not in the clear").isLessThan(0);
            writer.writePages(changes.drain());
            writer.finish();
        }
        try (GuestMemory target = GuestMemory.create(size, FLAGS, Backing.MEMFD)) {
            Binding owner = target.bind(new Owner() { }, 0, size);
            Snapshot.restore(owner, key, new ByteArrayInputStream(out.toByteArray()), new Snapshot.ReplayGuard());
            for (long p = 0; p < runPages; p++) {
                assertThat(owner.pages().asSlice(p * PAGE, PAGE).toArray(JAVA_BYTE)).as("page %d", p).containsOnly((byte) (p + 1));
            }
            assertThat(target.attribute(Snapshot.CHUNK + 3 * PAGE)).isEqualTo(Attribute.PRIVATE);
        }
    }
}
