package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.testing.Gen;
import dev.guestmemfd.testing.SequenceProperty;
import dev.guestmemfd.testing.Shrink;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.function.BiFunction;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Random sequences of operations on a real guest memory file, checked step by step against
 * a plain model that keeps one attribute and one byte array per page: states, contents and
 * errors must agree, on every backing this host offers. A failing sequence is shrunk and
 * printed with the seed that replays it (see {@link SequenceProperty}).
 */
class GuestMemoryModelTest {
    static final int PAGE = (int) GuestMemory.PAGE_SIZE;
    static final int PAGES = 12;
    static final int SIZE = PAGES * PAGE;
    /** As many sequences as the jqwik property this replaces ran, per owner. */
    static final int TRIES = 3000;

    sealed interface Op permits Allocate, Punch, Convert, Map, Unmap, Write, Read, Lease, Unlease, Pin, Unpin, Close {
    }

    record Allocate(long offset, long length) implements Op { }

    record Punch(long offset, long length) implements Op { }

    record Convert(long offset, long length, Attribute target, Content content) implements Op { }

    record Map(long offset, long length) implements Op { }

    record Unmap(int which) implements Op { }

    record Write(int which, long at, int length, byte value) implements Op { }

    record Read(int which, long at, int length) implements Op { }

    record Lease(int which, long at, int length) implements Op { }

    record Unlease(int which) implements Op { }

    record Pin(long offset, long length) implements Op { }

    record Unpin(int which) implements Op { }

    record Close() implements Op { }

    /** What a sequence runs in: which backing, and whether pages start shared. */
    record Setup(Backing backing, boolean initShared) { }

    /**
     * Page-granular offsets, mostly valid, sometimes not. Two thirds of the valid ones fall
     * in the first two pages, so that writes and conversions meet on one page often: a
     * conversion that keeps bytes it should zero shows only where a write and two conversions
     * touch one page in that order (measured with ZERO and PRESERVE swapped in convert, 6000
     * sequences on MEMFD: 100 fail, against 42 with offsets uniform over the file).
     */
    static Gen<Long> pageOffsets() {
        Gen<Integer> pages = Gen.frequency(Gen.weighted(1, Gen.ints(0, PAGES - 1)), Gen.weighted(2, Gen.ints(0, 1)));
        return Gen.frequency(
                Gen.weighted(3, pages.map(p -> (long) p * PAGE)),
                Gen.weighted(1, Gen.elements((long) -PAGE, 1L, (long) SIZE, (long) SIZE + PAGE, PAGE + 7L)));
    }

    /** Offsets in a host mapping for reads, writes and leases: mostly in its first two pages, else anywhere. */
    static Gen<Long> hostOffsets() {
        return Gen.frequency(Gen.weighted(1, Gen.longs(0, SIZE)), Gen.weighted(2, Gen.longs(0, 2L * PAGE)));
    }

    /** Byte counts for reads, writes and leases: up to two pages, or a few bytes (which meet less by chance). */
    static Gen<Integer> byteCounts() {
        return Gen.oneOf(Gen.ints(1, 2 * PAGE), Gen.ints(1, 64));
    }

    /** Page-granular lengths, mostly short, sometimes the whole file, sometimes invalid. */
    static Gen<Long> pageLengths() {
        return Gen.frequency(
                Gen.weighted(2, Gen.ints(1, 4).map(p -> (long) p * PAGE)),
                Gen.weighted(1, Gen.ints(1, PAGES).map(p -> (long) p * PAGE)),
                Gen.weighted(1, Gen.elements(0L, 100L, (long) -PAGE, (long) SIZE * 2)));
    }

    /**
     * {@return the operations, each kind as often as its weight says} Close is rarer than the
     * rest: every operation after it fails with EBADF, which a run still sees thousands of times.
     */
    static Gen<Op> operations() {
        // Index 0 is the mapping of the whole file every sequence starts with.
        Gen<Integer> which = Gen.frequency(Gen.weighted(6, Gen.constant(0)), Gen.weighted(2, Gen.constant(1)),
                Gen.weighted(1, Gen.constant(2)));
        Gen<Integer> laterMapping = Gen.frequency(Gen.weighted(2, Gen.constant(1)), Gen.weighted(1, Gen.constant(2)));
        Gen<Long> offsets = pageOffsets();
        Gen<Long> lengths = pageLengths();
        Gen<Long> at = hostOffsets();
        Gen<Integer> byteCounts = byteCounts();
        Gen<Attribute> attributes = Gen.elements(Attribute.values());
        Gen<Content> contents = Gen.elements(Content.values());
        Gen<Byte> bytes = Gen.bytes();
        return Gen.frequency(
                Gen.weighted(6, r -> new Allocate(offsets.next(r), lengths.next(r))),
                Gen.weighted(6, r -> new Punch(offsets.next(r), lengths.next(r))),
                Gen.weighted(15, r -> new Convert(offsets.next(r), lengths.next(r), attributes.next(r), contents.next(r))),
                Gen.weighted(6, r -> new Map(Gen.ints(0, PAGES).next(r) * (long) PAGE,
                        Gen.ints(1, PAGES + 2).next(r) * (long) PAGE)),
                Gen.weighted(3, laterMapping.map(Unmap::new)),
                Gen.weighted(15, r -> new Write(which.next(r), at.next(r), byteCounts.next(r), bytes.next(r))),
                Gen.weighted(15, r -> new Read(which.next(r), at.next(r), byteCounts.next(r))),
                Gen.weighted(6, r -> new Lease(which.next(r), at.next(r), byteCounts.next(r))),
                Gen.weighted(3, which.map(Unlease::new)),
                Gen.weighted(6, r -> new Pin(offsets.next(r), lengths.next(r))),
                Gen.weighted(6, which.map(Unpin::new)),
                Gen.weighted(1, Gen.constant(new Close())));
    }

    /**
     * {@return simpler forms of {@code op} for shrinking, simplest first} Ranges move towards
     * offset 0 and one page in page steps; host accesses towards the first mapping, offset 0
     * and one byte (at their start or their end); a written value towards 1 (0 would be
     * indistinguishable from a zeroed page).
     */
    static List<Op> simpler(Op op) {
        return switch (op) {
            case Allocate a -> ranges(a.offset(), a.length(), Allocate::new);
            case Punch p -> ranges(p.offset(), p.length(), Punch::new);
            case Convert c -> ranges(c.offset(), c.length(), (o, l) -> new Convert(o, l, c.target(), c.content()));
            case Map m -> ranges(m.offset(), m.length(), Map::new);
            case Pin p -> ranges(p.offset(), p.length(), Pin::new);
            case Unmap u -> Shrink.towards(u.which(), 1).stream().<Op>map(Unmap::new).toList();
            case Unlease u -> Shrink.towards(u.which(), 0).stream().<Op>map(Unlease::new).toList();
            case Unpin u -> Shrink.towards(u.which(), 0).stream().<Op>map(Unpin::new).toList();
            case Write w -> Stream.of(
                    Shrink.towards(w.which(), 0).stream().map(x -> new Write(x, w.at(), w.length(), w.value())),
                    Shrink.towards(w.at(), 0, 1).stream().map(x -> new Write(w.which(), x, w.length(), w.value())),
                    Shrink.towards(w.length(), 1).stream().map(x -> new Write(w.which(), w.at(), x, w.value())),
                    Shrink.towards(w.length(), 1).stream().map(x -> new Write(w.which(), w.at() + w.length() - x, x, w.value())),
                    Stream.of(new Write(w.which(), w.at(), w.length(), (byte) (w.value() == 0 ? 0 : 1))))
                    .<Op>flatMap(x -> x).toList();
            case Read r -> Stream.of(
                    Shrink.towards(r.which(), 0).stream().map(x -> new Read(x, r.at(), r.length())),
                    Shrink.towards(r.at(), 0, 1).stream().map(x -> new Read(r.which(), x, r.length())),
                    Shrink.towards(r.length(), 1).stream().map(x -> new Read(r.which(), r.at(), x)),
                    Shrink.towards(r.length(), 1).stream().map(x -> new Read(r.which(), r.at() + r.length() - x, x)))
                    .<Op>flatMap(x -> x).toList();
            case Lease l -> Stream.of(
                    Shrink.towards(l.which(), 0).stream().map(x -> new Lease(x, l.at(), l.length())),
                    Shrink.towards(l.at(), 0, 1).stream().map(x -> new Lease(l.which(), x, l.length())),
                    Shrink.towards(l.length(), 1).stream().map(x -> new Lease(l.which(), l.at(), x)),
                    Shrink.towards(l.length(), 1).stream().map(x -> new Lease(l.which(), l.at() + l.length() - x, x)))
                    .<Op>flatMap(x -> x).toList();
            case Close c -> List.of();
        };
    }

    private static List<Op> ranges(long offset, long length, BiFunction<Long, Long, Op> make) {
        List<Op> simpler = new ArrayList<>();
        Shrink.towards(offset, 0, PAGE).forEach(o -> simpler.add(make.apply(o, length)));
        Shrink.towards(length, PAGE, PAGE).forEach(l -> simpler.add(make.apply(offset, l)));
        return simpler;
    }

    /**
     * {@return the binding of the owner under test over all of {@code memory}, or null} The
     * models module runs this property once per architecture model and for the KVM owner.
     */
    Binding bindOwnerUnderTest(GuestMemory memory) {
        return null;
    }

    /** {@return true when the owner under test lets bytes cross a conversion (PRESERVE) in that direction} */
    boolean ownerKeepsContent(boolean toPrivate) {
        return true;
    }

    /** Where the model's page 0 lies in the file: 0, or where the last PAGES pages of a huge page begin. */
    private long base;

    /** {@return the file offset of the model's offset {@code offset}; negative and overflowing ones stay as they are} */
    long at(long offset) {
        return offset >= 0 && offset <= Long.MAX_VALUE - base ? offset + base : offset;
    }

    /** {@return a new file; the KVM owner's test creates kernel-backed files on its own VM} */
    GuestMemory createFile(long size, long flags, Backing backing) {
        return GuestMemory.create(size, flags, backing);
    }

    /** Releases what {@link #bindOwnerUnderTest} made for one try, after the file is closed. */
    void afterTry() {
    }

    /** The reference: one attribute and the bytes of every page, plus the host references. */
    static final class Model {
        final boolean[] privatePage = new boolean[PAGES];
        final byte[] bytes = new byte[SIZE];
        final List<long[]> maps = new ArrayList<>();      // {offset, length}
        final List<long[]> leases = new ArrayList<>();    // {fileOffset, length, valid(1/0)}
        final List<long[]> pins = new ArrayList<>();      // {offset, length}
        boolean closed;
        boolean keepsToPrivate = true;
        /** The error offset the last refused conversion must carry. */
        long lastErrorOffset = -1;
        boolean keepsToShared = true;

        Model(boolean initShared) {
            Arrays.fill(privatePage, !initShared);
        }

        static String checkRange(long offset, long length) {
            if (offset < 0 || length <= 0 || offset % PAGE != 0 || length % PAGE != 0 || offset > SIZE
                    || length > SIZE - offset) {
                return "EINVAL";
            }
            return null;
        }

        String allocate(long offset, long length) {
            if (closed) {
                return "EBADF";
            }
            if (offset < 0 || length <= 0 || offset % PAGE != 0 || length % PAGE != 0) {
                return "EINVAL";
            }
            return offset > SIZE || length > SIZE - offset ? "EINVAL" : null;
        }

        String punch(long offset, long length) {
            if (closed) {
                return "EBADF";
            }
            if (offset < 0 || length <= 0 || offset % PAGE != 0 || length % PAGE != 0) {
                return "EINVAL";
            }
            long end = Math.min(SIZE, offset + Math.min(length, SIZE));
            for (long o = offset; o < end; o++) {
                bytes[(int) o] = 0;
            }
            return null;
        }

        String convert(long offset, long length, Attribute target, Content content) {
            if (closed) {
                return "EBADF";
            }
            String bad = checkRange(offset, length);
            if (bad != null) {
                return bad;
            }
            boolean toPrivate = target == Attribute.PRIVATE;
            // The kernel's content-mode rules, checked before anything, also for a range that
            // changes no page: ZERO only towards shared; PRESERVE only where the owner keeps bytes.
            lastErrorOffset = offset;
            if (content == Content.ZERO && toPrivate) {
                return "EOPNOTSUPP";
            }
            if (content == Content.PRESERVE && !(toPrivate ? keepsToPrivate : keepsToShared)) {
                return "EOPNOTSUPP";
            }
            int first = (int) (offset / PAGE);
            int end = (int) ((offset + length) / PAGE);
            boolean changes = false;
            for (int p = first; p < end; p++) {
                changes |= privatePage[p] != toPrivate;
            }
            if (!changes) {
                if (content == Content.ZERO) {
                    Arrays.fill(bytes, first * PAGE, end * PAGE, (byte) 0);  // the mode applies to the whole range
                }
                return null;
            }
            if (toPrivate) {
                long firstPinned = Long.MAX_VALUE;
                for (long[] pin : pins) {
                    if (GuestMemory.overlaps(pin[0], pin[1], offset, length)) {
                        firstPinned = Math.min(firstPinned, Math.max(offset, pin[0]));
                    }
                }
                if (firstPinned != Long.MAX_VALUE) {
                    lastErrorOffset = firstPinned;  // the first page still referenced, as the kernel names it
                    return "EAGAIN";
                }
                for (long[] lease : leases) {
                    if (GuestMemory.overlaps(lease[0], lease[1], offset, length)) {
                        lease[2] = 0;
                    }
                }
            }
            for (int p = first; p < end; p++) {
                // ZERO (towards shared) zeroes every page of the range; UNSPECIFIED towards shared
                // zeroes the pages that were private: the library's choice, so that nothing
                // private reaches the host unless the caller asked for PRESERVE.
                if (content == Content.ZERO || (content == Content.UNSPECIFIED && !toPrivate && privatePage[p])) {
                    Arrays.fill(bytes, p * PAGE, (p + 1) * PAGE, (byte) 0);
                }
                privatePage[p] = toPrivate;
            }
            return null;
        }

        /** {@return null when host code may touch the file range, else "EFAULT"} */
        String hostAccess(long fileOffset, long length) {
            if (closed) {
                return "EBADF";
            }
            if (fileOffset + length > SIZE) {
                return "EFAULT";
            }
            for (long p = fileOffset / PAGE; p <= (fileOffset + length - 1) / PAGE; p++) {
                if (privatePage[(int) p]) {
                    return "EFAULT";
                }
            }
            return null;
        }

        String pin(long offset, long length) {
            if (closed) {
                return "EBADF";
            }
            String bad = checkRange(offset, length);
            if (bad != null) {
                return bad;
            }
            return hostAccess(offset, length);
        }
    }

    /** How often each kind of operation ended how ("Convert ok", "Pin EFAULT", ...), over a run. */
    private final java.util.Map<String, Integer> outcomes = new TreeMap<>();

    @Test
    @Timeout(value = 10, unit = TimeUnit.MINUTES)
    void theLibraryBehavesLikeThePerPageModel() {
        String name = getClass().getSimpleName();
        List<Backing> backings = List.copyOf(Backing.available());
        StringBuilder skipped = new StringBuilder();
        for (Backing b : EnumSet.complementOf(EnumSet.copyOf(backings))) {
            skipped.append(String.format(" (%s skipped: %s)", b, b.unavailableReason().orElseThrow()));
        }
        System.out.printf("%s: backings drawn: %s%s%n", name, backings, skipped);
        Gen<Backing> drawn = Gen.elements(backings);
        Gen<Setup> setups = r -> new Setup(drawn.next(r), r.nextBoolean());
        SequenceProperty.of(name, setups, operations(), 5, 60)
                .tries(TRIES)
                .simplerOperations(GuestMemoryModelTest::simpler)
                .check(this::behavesLikeTheModel);
        System.out.printf("%s: outcomes: %s%n", name, outcomes);
        if (Integer.getInteger(SequenceProperty.TRIES_PROPERTY, TRIES) >= TRIES) {
            assertCoverage();
        }
    }

    /** The generators still reach every kind of operation, valid and not: a guard against their decay. */
    private void assertCoverage() {
        for (String kind : List.of("Allocate", "Punch", "Convert", "Map", "Unmap", "Write", "Read", "Lease",
                "Unlease", "Pin", "Unpin", "Close")) {
            assertThat(outcomes).as("outcomes").containsKey(kind + " ok");
        }
        assertThat(outcomes.keySet()).as("outcomes").contains("Allocate EINVAL", "Convert EINVAL", "Convert EAGAIN",
                "Pin EINVAL", "Pin EFAULT", "Write EFAULT", "Read EFAULT", "Lease EFAULT", "Convert EBADF",
                "Read ok nonzero");
        assertThat(outcomes).as("outcomes: ZERO towards private is refused").containsKey("Convert EOPNOTSUPP");
    }

    private void count(Op op, String outcome) {
        outcomes.merge(op.getClass().getSimpleName() + " " + outcome, 1, Integer::sum);
    }

    @SuppressWarnings("try") // the Close operation closes the file inside its try block on purpose
    void behavesLikeTheModel(Setup setup, List<Op> ops) {
        Backing backing = setup.backing();
        boolean initShared = setup.initShared();
        long flags = Flag.MMAP.bit() | (initShared ? Flag.INIT_SHARED.bit() : 0)
                | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
        Model model = new Model(initShared);
        model.keepsToPrivate = ownerKeepsContent(true);
        model.keepsToShared = ownerKeepsContent(false);
        // On huge pages the file is one huge page and the model its last PAGES pages: the
        // sequence meets the file's end, as on the other backings, and shares huge pages.
        long fileSize = Math.max(SIZE, backing.blockSize());
        base = fileSize - SIZE;
        try (GuestMemory memory = createFile(fileSize, flags, backing)) {
            bindOwnerUnderTest(memory);
            memory.pinWait(java.time.Duration.ZERO);
            List<HostMapping> maps = new ArrayList<>();
            // Every sequence starts with one mapping of the whole file and two pages past its end.
            maps.add(memory.map(at(0), SIZE + 2L * PAGE));
            model.maps.add(new long[] {0, SIZE + 2L * PAGE});
            List<dev.guestmemfd.Lease> leases = new ArrayList<>();
            List<dev.guestmemfd.Pin> pins = new ArrayList<>();
            ChangeLog changes = memory.trackChanges();
            for (Op op : ops) {
                boolean[] privateBefore = model.privatePage.clone();
                byte[] bytesBefore = model.bytes.clone();
                switch (op) {
                    case Allocate a -> expect(model.allocate(a.offset(), a.length()), () -> memory.allocate(at(a.offset()), a.length()), op);
                    case Punch p -> {
                        String predicted = model.punch(p.offset(), p.length());
                        expect(predicted, () -> memory.punchHole(at(p.offset()), p.length()), op);
                    }
                    case Convert c -> {
                        String predicted = model.convert(c.offset(), c.length(), c.target(), c.content());
                        GuestMemoryException refused = expect(predicted,
                                () -> memory.convert(at(c.offset()), c.length(), c.target(), c.content()), op);
                        if (refused != null && (predicted.equals("EOPNOTSUPP") || predicted.equals("EAGAIN"))) {
                            assertThat(refused.errorOffset()).as("%s: error offset", op).isEqualTo(at(model.lastErrorOffset));
                        }
                    }
                    case Map m -> {
                        HostMapping[] got = new HostMapping[1];
                        expect(model.closed ? "EBADF" : null, () -> got[0] = memory.map(at(m.offset()), m.length()), op);
                        if (!model.closed) {
                            maps.add(got[0]);
                            model.maps.add(new long[] {m.offset(), m.length()});
                        }
                    }
                    case Close c -> {
                        if (!model.closed) {
                            checkSharedBytes(maps.getFirst(), model, "before " + op);
                        }
                        memory.close();
                        count(op, "ok");
                        model.closed = true;
                        model.leases.forEach(l -> l[2] = 0);
                    }
                    case Unmap u -> {
                        if (u.which() < maps.size()) {
                            count(op, "ok");
                            maps.remove(u.which()).close();
                            long[] gone = model.maps.remove(u.which());
                            for (int i = leases.size() - 1; i >= 0; i--) {
                                if (model.leases.get(i)[3] == System.identityHashCode(gone)) {
                                    model.leases.get(i)[2] = 0;
                                }
                            }
                        }
                    }
                    case Write w -> {
                        if (w.which() < maps.size() && w.at() + w.length() <= model.maps.get(w.which())[1]) {
                            long fileOffset = model.maps.get(w.which())[0] + w.at();
                            byte[] data = new byte[w.length()];
                            Arrays.fill(data, w.value());
                            String predicted = model.hostAccess(fileOffset, w.length());
                            expect(predicted, () -> maps.get(w.which()).write(w.at(), data), op);
                            if (predicted == null) {
                                System.arraycopy(data, 0, model.bytes, (int) fileOffset, w.length());
                            }
                        }
                    }
                    case Read r -> {
                        if (r.which() < maps.size() && r.at() + r.length() <= model.maps.get(r.which())[1]) {
                            long fileOffset = model.maps.get(r.which())[0] + r.at();
                            String predicted = model.hostAccess(fileOffset, r.length());
                            byte[][] got = new byte[1][];
                            expect(predicted, () -> got[0] = maps.get(r.which()).read(r.at(), r.length()), op);
                            if (predicted == null && !Arrays.equals(got[0], new byte[r.length()])) {
                                count(op, "ok nonzero");
                            }
                            if (predicted == null) {
                                assertThat(got[0]).as("%s", op).isEqualTo(
                                        Arrays.copyOfRange(model.bytes, (int) fileOffset, (int) fileOffset + r.length()));
                            }
                        }
                    }
                    case Lease l -> {
                        if (l.which() < maps.size() && l.at() + l.length() <= model.maps.get(l.which())[1]) {
                            long[] map = model.maps.get(l.which());
                            long fileOffset = map[0] + l.at();
                            String predicted = model.hostAccess(fileOffset, l.length());
                            dev.guestmemfd.Lease[] got = new dev.guestmemfd.Lease[1];
                            expect(predicted, () -> got[0] = maps.get(l.which()).lease(l.at(), l.length()), op);
                            if (predicted == null) {
                                leases.add(got[0]);
                                model.leases.add(new long[] {fileOffset, l.length(), 1, System.identityHashCode(map)});
                            }
                        }
                    }
                    case Unlease u -> {
                        if (u.which() < leases.size()) {
                            count(op, "ok");
                            leases.remove(u.which()).close();
                            model.leases.remove(u.which());
                        }
                    }
                    case Pin p -> {
                        String predicted = model.pin(p.offset(), p.length());
                        dev.guestmemfd.Pin[] got = new dev.guestmemfd.Pin[1];
                        expect(predicted, () -> got[0] = memory.pin(at(p.offset()), p.length()), op);
                        if (predicted == null) {
                            pins.add(got[0]);
                            model.pins.add(new long[] {p.offset(), p.length()});
                        }
                    }
                    case Unpin u -> {
                        if (u.which() < pins.size()) {
                            count(op, "ok");
                            pins.remove(u.which()).close();
                            model.pins.remove(u.which());
                        }
                    }
                }
                checkState(memory, model, leases, op, base);
                if (!model.closed) {
                    checkChangeLog(changes.drain().get((int) (base / PAGE), (int) (base / PAGE) + PAGES), privateBefore,
                            bytesBefore, model, op);
                }
            }
            if (!model.closed) {
                checkSharedBytes(maps.getFirst(), model, "at the end");
            }
        } finally {
            afterTry();
        }
    }

    /**
     * Runs {@code call}, which must fail with {@code errno}, or succeed where that is null.
     *
     * @return the refusal, or null when the call was to succeed and did
     */
    GuestMemoryException expect(String errno, Runnable call, Op op) {
        count(op, errno == null ? "ok" : errno);
        if (errno == null) {
            call.run();
            return null;
        }
        try {
            call.run();
        } catch (GuestMemoryException e) {
            assertThat(e.errno().name()).as("%s: %s", op, e.getMessage()).isEqualTo(errno);
            return e;
        }
        throw new AssertionError(op + ": expected " + errno + " but it succeeded");
    }

    /** A migration resends what the change log names: every page whose attribute or bytes changed must be in it. */
    static void checkChangeLog(java.util.BitSet drained, boolean[] privateBefore, byte[] bytesBefore, Model model, Op op) {
        for (int p = 0; p < PAGES; p++) {
            boolean changed = privateBefore[p] != model.privatePage[p]
                    || !Arrays.equals(bytesBefore, p * PAGE, (p + 1) * PAGE, model.bytes, p * PAGE, (p + 1) * PAGE);
            if (changed) {
                assertThat(drained.get(p)).as("page %d changed by %s but the change log misses it", p, op).isTrue();
            }
        }
    }

    /**
     * Every shared page holds the model's bytes, read through the mapping of the whole file:
     * a wrong byte shows even where no Read of the sequence happens to look.
     */
    static void checkSharedBytes(HostMapping whole, Model model, String when) {
        for (int p = 0; p < PAGES; p++) {
            if (!model.privatePage[p]) {
                assertThat(whole.read((long) p * PAGE, PAGE)).as("bytes of shared page %d %s", p, when)
                        .isEqualTo(Arrays.copyOfRange(model.bytes, p * PAGE, (p + 1) * PAGE));
            }
        }
    }

    static void checkState(GuestMemory memory, Model model, List<dev.guestmemfd.Lease> leases, Op op, long base) {
        for (int p = 0; p < PAGES && !model.closed; p++) {
            assertThat(memory.attribute(base + (long) p * PAGE)).as("page %d after %s", p, op)
                    .isEqualTo(model.privatePage[p] ? Attribute.PRIVATE : Attribute.SHARED);
        }
        for (int i = 0; i < leases.size(); i++) {
            boolean valid = model.leases.get(i)[2] == 1;
            assertThat(leases.get(i).isValid()).as("lease %d after %s", i, op).isEqualTo(valid);
            if (valid) {
                long[] l = model.leases.get(i);
                assertThat(leases.get(i).segment().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE))
                        .as("lease %d contents after %s", i, op)
                        .isEqualTo(Arrays.copyOfRange(model.bytes, (int) l[0], (int) (l[0] + l[1])));
            }
        }
    }
}
