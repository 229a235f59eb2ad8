package dev.guestmemfd;

import static dev.guestmemfd.Errors.assertErrno;
import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** {@link Snapshot.Reader#verify}: a stream checked and described without a file to restore into. */
@Timeout(60)
class SnapshotVerifyTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long SIZE = 64 * PAGE;
    static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();

    /**
     * Pages 4-6 shared with 0x5a, 16-17 private with 0x5e, 40 a private hole, the rest shared
     * holes; written whole, between two owner state records.
     */
    static byte[] stream(SecretKey key) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory m = SnapshotTest.source(Backing.MEMFD)) {
            Binding owner = SnapshotTest.bindingOf(m);
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), key, out);
            writer.writeState(new byte[] {1, 2, 3});
            writer.writeAll();
            writer.writeState(new byte[] {4});
            writer.finish();
        }
        return out.toByteArray();
    }

    static SnapshotContents verify(SecretKey key, byte[] stream, List<byte[]> states) throws IOException {
        return Snapshot.reader(key, new ByteArrayInputStream(stream), new Snapshot.ReplayGuard()).verify(states::add);
    }

    @Test
    void aWholeStreamIsDescribedPageByPageAndItsStateHandedOver() throws Exception {
        SecretKey key = SnapshotTest.key();
        List<byte[]> states = new ArrayList<>();
        SnapshotContents c = verify(key, stream(key), states);
        assertThat(c.fileSize()).isEqualTo(SIZE);
        assertThat(c.rounds()).isEqualTo(1);
        assertThat(c.sharedPages()).isEqualTo(3);
        assertThat(c.privatePages()).isEqualTo(2);
        assertThat(c.privateHoles()).isEqualTo(1);
        assertThat(c.sharedHoles()).isEqualTo(64 - 6);
        assertThat(c.unrecordedPages()).isZero();
        assertThat(c.sharedBytes()).isEqualTo(3 * PAGE);
        assertThat(c.privateBytes()).isEqualTo(2 * PAGE);
        assertThat(c.states()).isEqualTo(2);
        assertThat(c.stateBytes()).isEqualTo(4);
        assertThat(states).hasSize(2);
        assertThat(states.getFirst()).containsExactly(1, 2, 3);
        assertThat(states.getLast()).containsExactly(4);
    }

    @Test
    void aPreCopyStreamCountsItsRoundsAndEndsInTheLastStateOfEachPage() throws Exception {
        SecretKey key = SnapshotTest.key();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory m = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD); ChangeLog changes = m.trackChanges();
             HostMapping host = m.map(0, SIZE)) {
            Binding owner = m.bind(new Owner() { }, 0, SIZE);
            host.write(4 * PAGE, new byte[(int) (3 * PAGE)]);
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), key, out);
            changes.drain();
            writer.writeAll();
            host.write(30 * PAGE, new byte[] {7});                               // newly allocated
            m.punchHole(6 * PAGE, PAGE);                                         // freed since
            m.convert(4 * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE);      // now private
            BitSet changed = changes.drain();
            writer.writePages(changed);
            writer.finish();
        }
        SnapshotContents c = verify(key, out.toByteArray(), new ArrayList<>());
        assertThat(c.rounds()).isEqualTo(2);
        assertThat(c.privatePages()).as("page 4").isEqualTo(1);
        assertThat(c.sharedPages()).as("pages 5 and 30").isEqualTo(2);
        assertThat(c.sharedHoles()).as("page 6 freed since, and the untouched rest").isEqualTo(64 - 3);
        assertThat(c.states()).isZero();
    }

    @Test
    void anAlteredCutOrWrongKeyStreamIsRefusedAndTheGuardIsNotMarked() throws Exception {
        SecretKey key = SnapshotTest.key();
        byte[] stream = stream(key);
        byte[] sharedFlipped = stream.clone();
        sharedFlipped[SnapshotTest.indexOf(stream, (byte) 0x5a, 64)] ^= 1;
        byte[] privateFlipped = stream.clone();
        privateFlipped[stream.length - 200] ^= 1;
        byte[] cut = Arrays.copyOf(stream, stream.length / 2);
        byte[] cutInTheEnd = Arrays.copyOf(stream, stream.length - 1);
        for (byte[] bad : new byte[][] {sharedFlipped, privateFlipped, cut, cutInTheEnd}) {
            assertErrno(() -> verify(key, bad, new ArrayList<>()), "EBADMSG");
        }
        assertErrno(() -> verify(SnapshotTest.key(), stream, new ArrayList<>()), "EBADMSG");
        Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
        Snapshot.reader(key, new ByteArrayInputStream(stream), guard).verify(s -> { });
        try (GuestMemory target = GuestMemory.create(SIZE, FLAGS, Backing.MEMFD)) {
            Binding owner = target.bind(new Owner() { }, 0, SIZE);
            Snapshot.Reader reader = Snapshot.reader(key, new ByteArrayInputStream(stream), guard);
            reader.restore(List.of(owner), s -> { });
            assertThat(target.pageCounts().allocated()).as("verified first, then restored with the same guard").isEqualTo(5);
        }
    }
}
