package dev.guestmemfd;

import static dev.guestmemfd.SnapshotFixtures.PAGE;
import static dev.guestmemfd.SnapshotFixtures.flags;
import static dev.guestmemfd.SnapshotFixtures.key;
import static dev.guestmemfd.SnapshotFixtures.page;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

import dev.guestmemfd.SnapshotFixtures.HostPoller;
import dev.guestmemfd.SnapshotFixtures.TargetState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import javax.crypto.SecretKey;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The hostile kit's snapshot part: a small two-round stream (shared pages, private pages,
 * holes of both kinds, owner state) mutated every way a man in the middle could, restored into
 * every available backing. Each attempt must be refused with the right errno, leave the target
 * as it was (attributes, which pages hold data, a digest of every page), and show host code
 * that polls the target meanwhile no private plaintext.
 *
 * <p>On memfd, into a target that starts private, every byte is flipped (one seeded bit) and
 * every truncation point is tried; on the other backings, and into targets that start shared,
 * every byte outside page bodies (header, record headers, tags, owner state, end, trailer)
 * and a seeded sample of page-body bytes, each of which fails as its neighbours do. Appended
 * bytes, swapped, duplicated, dropped and forged records and another key: all of them,
 * everywhere. A host poller reads every page of each target that starts private throughout;
 * one on a target that starts shared would allocate its holes by reading them, and the target
 * would no longer be as before (those are covered without one). The seed is printed; rerun
 * with {@code -Dgmem.kit.seed=N}.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SnapshotMutationTest {
    static final long SEED = Long.getLong("gmem.kit.seed", System.nanoTime());
    static final long PAGES = 8;
    static final byte[] SECRET_1 = page("first private page of the guest. ".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
    static final byte[] SECRET_2 = page("second private page, round two.. ".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
    static final byte[] STATE = "vcpu registers".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    /** Bytes of the header's fileSize field: a flip there names another file, which the target refuses as EINVAL. */
    static final int FILE_SIZE_FIELD = SnapshotFormat.MAGIC.length + 4;

    static SecretKey key;
    static byte[] stream;
    static List<Record> records;
    /** The streams by file size: the backings of huge pages need files of whole huge pages. */
    static final java.util.Map<Long, byte[]> STREAMS = new java.util.HashMap<>();

    /** One record's bytes in the stream: {@code [start, end)}, its body from {@code body}. */
    record Record(int start, int end, int kind, int body) {
    }

    @BeforeAll
    static void writeTheStream() throws IOException {
        System.out.println("SnapshotMutationTest seed=" + SEED + " (rerun with -Dgmem.kit.seed=" + SEED + ")");
        key = key();
        stream = twoRounds(key, PAGES * PAGE);
        records = parse(stream);
        STREAMS.put(PAGES * PAGE, stream);
    }

    /** Makes {@link #stream} and {@link #records} those of a file of {@code fileSize} bytes: the same pages, then holes. */
    static void useStreamOf(long fileSize) throws IOException {
        byte[] s = STREAMS.get(fileSize);
        if (s == null) {
            s = twoRounds(key, fileSize);
            STREAMS.put(fileSize, s);
        }
        stream = s;
        records = parse(s);
    }

    /**
     * Round one: page 0 shared, 1 private (secret 1), 2 a private hole, 3 shared, 4-7 shared
     * holes. Then the guest shares page 1 (ZERO) and the host writes it, page 3 is punched, page
     * 5 becomes private holding secret 2. Round two sends pages 1, 3 and 5 again.
     */
    static byte[] twoRounds(SecretKey key, long fileSize) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (GuestMemory source = GuestMemory.create(fileSize, flags(Backing.MEMFD, true), Backing.MEMFD);
             ChangeLog changes = source.trackChanges()) {
            Binding owner = source.bind(new Owner() { }, 0, fileSize);
            owner.pages().asSlice(0, PAGE).fill((byte) 0x10);
            source.convert(PAGE, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(PAGE, PAGE).copyFrom(MemorySegment.ofArray(SECRET_1));
            owner.pages().asSlice(3 * PAGE, PAGE).fill((byte) 0x30);
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), key, out);
            writer.writeState(STATE);
            changes.drain();
            writer.writeAll();
            source.convert(PAGE, PAGE, Attribute.SHARED, Content.ZERO);
            try (HostMapping host = source.map(0, PAGES * PAGE)) {
                host.write(PAGE, page(0x11));
            }
            source.punchHole(3 * PAGE, PAGE);
            source.convert(5 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(5 * PAGE, PAGE).copyFrom(MemorySegment.ofArray(SECRET_2));
            writer.writePages(changes.drain());
            writer.finish();
        }
        return out.toByteArray();
    }

    /** {@return the records of a stream, the end record excluded} */
    static List<Record> parse(byte[] s) {
        List<Record> found = new ArrayList<>();
        ByteBuffer b = ByteBuffer.wrap(s);
        int at = SnapshotFormat.HEADER_BYTES;
        while (true) {
            int kind = s[at] & 0xff;
            if (kind == SnapshotFormat.END) {
                assertThat(at + 1 + 8 + SnapshotFormat.TRAILER_BYTES).isEqualTo(s.length);
                return found;
            }
            int length = b.getInt(at + 1 + 8);
            int body = at + SnapshotFormat.RECORD_HEADER_BYTES;
            int end = switch (kind) {
                case SnapshotFormat.SHARED, SnapshotFormat.PRIVATE, SnapshotFormat.STATE, SnapshotFormat.LAYOUT ->
                        body + length + SnapshotFormat.TAG_BYTES;
                default -> body;
            };
            found.add(new Record(at, end, kind, body));
            at = end;
        }
    }

    static Stream<Arguments> backingsAndFirstAttribute() {
        return Backing.available().stream().flatMap(b -> Stream.of(Arguments.of(b, false), Arguments.of(b, true)));
    }

    /** Restores attempts into one target and checks each; counts them. */
    static final class Target {
        final GuestMemory memory;
        final Binding owner;
        final TargetState before;
        final Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
        int attempts;

        Target(GuestMemory memory) {
            this.memory = memory;
            this.owner = memory.bind(new Owner() { }, 0, memory.size());
            this.before = TargetState.of(memory);
        }

        void refused(String what, InputStream in, SecretKey with, Set<String> errnos) {
            attempts++;
            try {
                Snapshot.reader(with, in, guard).restore(List.of(owner), state -> { });
                fail(what + " was restored (seed " + SEED + ")");
            } catch (GuestMemoryException e) {
                assertThat(e.errno().name()).as("%s: %s (seed %d)", what, e.getMessage(), SEED).isIn(errnos);
            } catch (IOException e) {
                fail(what + ": " + e + " (seed " + SEED + ")");
            }
            TargetState after = TargetState.of(memory);
            if (!after.equals(before)) {
                fail(what + " changed the target: " + before + " became " + after + " (seed " + SEED + ")");
            }
        }

        void refused(String what, byte[] bytes) {
            refused(what, new ByteArrayInputStream(bytes), key, Set.of("EBADMSG"));
        }
    }

    @ParameterizedTest(name = "{0}, starts shared: {1}")
    @MethodSource("backingsAndFirstAttribute")
    void everyMutationIsRefusedLeavesTheTargetAsItWasAndShowsTheHostNoPlaintext(Backing backing, boolean initShared)
            throws Exception {
        Random random = new Random(SEED ^ backing.ordinal() ^ (initShared ? 1 : 0));
        // Every byte and every cut on the memfd target that starts private (a poller on it);
        // elsewhere every byte outside page bodies (headers, tags, state, end, trailer) and a
        // seeded sample of page-body bytes, which all fail alike: under a minute in all.
        boolean everyByte = backing == Backing.MEMFD && !initShared;
        int sample = initShared ? 300 : 1000;
        long fileSize = Math.max(PAGES * PAGE, backing.blockSize());  // whole huge pages where pages are huge
        useStreamOf(fileSize);
        try (GuestMemory memory = GuestMemory.create(fileSize, flags(backing, initShared), backing);
             HostMapping host = memory.map(0, memory.size());
             HostPoller poller = initShared ? null : new HostPoller(List.of(SECRET_1, SECRET_2))) {
            Target target = new Target(memory);
            if (poller != null) {
                poller.poll(host);
            }
            byte[] s = stream.clone();

            for (int i : positions(everyByte, sample, random)) {
                int mask = 1 << random.nextInt(8);
                s[i] ^= (byte) mask;
                boolean namesAnotherFile = i >= FILE_SIZE_FIELD && i < FILE_SIZE_FIELD + 8;
                target.refused("byte " + i + " ^ " + mask, new ByteArrayInputStream(s), key,
                        namesAnotherFile ? Set.of("EBADMSG", "EINVAL") : Set.of("EBADMSG"));
                s[i] ^= (byte) mask;
            }
            for (int cut : positions(everyByte, sample, random)) {
                target.refused("cut at " + cut, new ByteArrayInputStream(s, 0, cut), key, Set.of("EBADMSG"));
            }
            for (int extra : new int[] {1, 16, 4096, 100_000}) {
                byte[] tail = new byte[extra];
                random.nextBytes(tail);
                target.refused(extra + " bytes appended", concat(s, tail));
            }
            target.refused("the stream twice", concat(s, s));
            for (int r = 0; r + 1 < records.size(); r++) {
                target.refused("records " + r + " and " + (r + 1) + " swapped", swapped(r));
            }
            for (int r = 0; r < records.size(); r++) {
                target.refused("record " + r + " twice", duplicated(r));
                target.refused("record " + r + " dropped", dropped(r));
            }
            for (Record r : records) {
                if (r.kind() == SnapshotFormat.PRIVATE) {
                    target.refused("private record at " + r.start() + " forged in the clear", forgedClear(r, random));
                }
            }
            for (long p = 0; p < PAGES; p++) {
                byte[] forged = page(0x40 + (int) p);
                target.refused("cut, then a forged clear record of page " + p, cutThenForged(p, forged, false));
                target.refused("cut, then a forged clear record of page " + p + " and a forged end",
                        cutThenForged(p, forged, true));
            }
            target.refused("another key", new ByteArrayInputStream(s), key(), Set.of("EBADMSG"));

            if (poller != null) {
                poller.stop();
                assertThat(poller.secretsSeen()).as("host reads that returned private plaintext (seed %d)", SEED).isZero();
            }
            System.out.println("SnapshotMutationTest " + backing + (initShared ? " starting shared" : " starting private")
                    + ": " + target.attempts + " attempts refused over a " + s.length + "-byte stream"
                    + (poller == null ? "" : ", host poller ran throughout"));
            // The target took nothing in, and takes the true stream.
            Snapshot.reader(key, new ByteArrayInputStream(s), target.guard).restore(List.of(target.owner), state -> { });
            assertThat(memory.attribute(5 * PAGE)).isEqualTo(Attribute.PRIVATE);
            assertThat(memory.pages().asSlice(PAGE, PAGE).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE))
                    .isEqualTo(page(0x11));
        }
    }

    /**
     * {@return every index of the stream, or every index outside page bodies and {@code sample}
     * seeded ones inside them}
     */
    static int[] positions(boolean everyByte, int sample, Random random) {
        if (everyByte) {
            return java.util.stream.IntStream.range(0, stream.length).toArray();
        }
        java.util.BitSet chosen = new java.util.BitSet(stream.length);
        chosen.set(0, stream.length);
        List<int[]> bodies = new ArrayList<>();
        for (Record r : records) {
            if (SnapshotFormat.carriesPages(r.kind())) {
                int pagesEnd = r.end() - SnapshotFormat.TAG_BYTES;  // a shared record is tagged too (version 4)
                chosen.clear(r.body(), pagesEnd);
                bodies.add(new int[] {r.body(), pagesEnd});
            }
        }
        for (int i = 0; i < sample; i++) {
            int[] body = bodies.get(random.nextInt(bodies.size()));
            chosen.set(body[0] + random.nextInt(body[1] - body[0]));
        }
        return chosen.stream().toArray();
    }

    static byte[] concat(byte[] a, byte[] b) {
        byte[] c = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    /** {@return the stream with bytes {@code [from, to)} replaced by {@code with}} */
    static byte[] splice(int from, int to, byte[] with) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(stream, 0, from);
        out.writeBytes(with);
        out.write(stream, to, stream.length - to);
        return out.toByteArray();
    }

    static byte[] bytesOf(Record r) {
        return Arrays.copyOfRange(stream, r.start(), r.end());
    }

    static byte[] swapped(int r) {
        Record a = records.get(r);
        Record b = records.get(r + 1);
        return splice(a.start(), b.end(), concat(bytesOf(b), bytesOf(a)));
    }

    static byte[] duplicated(int r) {
        Record a = records.get(r);
        return splice(a.start(), a.end(), concat(bytesOf(a), bytesOf(a)));
    }

    static byte[] dropped(int r) {
        Record a = records.get(r);
        return splice(a.start(), a.end(), new byte[0]);
    }

    /** A private record's place taken by a shared record of the same pages, carrying chosen bytes. */
    static byte[] forgedClear(Record r, Random random) throws IOException {
        int length = ByteBuffer.wrap(stream).getInt(r.start() + 1 + 8);
        byte[] bytes = new byte[length];
        random.nextBytes(bytes);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        DataOutputStream data = new DataOutputStream(out);
        data.writeByte(SnapshotFormat.SHARED);
        data.writeLong(ByteBuffer.wrap(stream).getLong(r.start() + 1));
        data.writeInt(length);
        data.write(bytes);
        return splice(r.start(), r.end(), out.toByteArray());
    }

    /** The stream cut before its end record, then a forged clear record of page {@code p}, and perhaps a forged end. */
    static byte[] cutThenForged(long p, byte[] forged, boolean withEnd) throws IOException {
        Record last = records.getLast();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(stream, 0, last.end());
        DataOutputStream data = new DataOutputStream(out);
        data.writeByte(SnapshotFormat.SHARED);
        data.writeLong(p * PAGE);
        data.writeInt((int) PAGE);
        data.write(forged);
        if (withEnd) {
            data.writeByte(SnapshotFormat.END);
            data.writeLong(records.size() + 1);
            data.write(new byte[SnapshotFormat.TRAILER_BYTES]);
        }
        return out.toByteArray();
    }
}
