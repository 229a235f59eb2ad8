package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

/**
 * Random sequences of operations on a real guest memory file, checked step by step against
 * a plain model that keeps one attribute and one byte array per page: states, contents and
 * errors must agree, on every backing.
 */
class GuestMemoryModelTest {
    static final int PAGE = (int) GuestMemory.PAGE_SIZE;
    static final int PAGES = 12;
    static final int SIZE = PAGES * PAGE;

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

    /** Page-granular offsets, mostly valid, sometimes not. */
    static Arbitrary<Long> pageOffsets() {
        return Arbitraries.oneOf(
                Arbitraries.integers().between(0, PAGES - 1).map(p -> (long) p * PAGE),
                Arbitraries.integers().between(0, PAGES - 1).map(p -> (long) p * PAGE),
                Arbitraries.integers().between(0, PAGES - 1).map(p -> (long) p * PAGE),
                Arbitraries.of((long) -PAGE, 1L, (long) SIZE, (long) SIZE + PAGE, PAGE + 7L));
    }

    static Arbitrary<Long> pageLengths() {
        return Arbitraries.oneOf(
                Arbitraries.integers().between(1, 4).map(p -> (long) p * PAGE),
                Arbitraries.integers().between(1, 4).map(p -> (long) p * PAGE),
                Arbitraries.integers().between(1, PAGES).map(p -> (long) p * PAGE),
                Arbitraries.of(0L, 100L, (long) -PAGE, (long) SIZE * 2));
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

    /** {@return a new file; the KVM owner's test creates kernel-backed files on its own VM} */
    GuestMemory createFile(long size, long flags, Backing backing) {
        return GuestMemory.create(size, flags, backing);
    }

    /** Releases what {@link #bindOwnerUnderTest} made for one try, after the file is closed. */
    void afterTry() {
    }

    @Provide
    Arbitrary<List<Op>> operations() {
        Arbitrary<Integer> which = Arbitraries.frequency(net.jqwik.api.Tuple.of(6, 0), net.jqwik.api.Tuple.of(2, 1), net.jqwik.api.Tuple.of(1, 2));
        Arbitrary<Op> op = Arbitraries.frequencyOf(
                net.jqwik.api.Tuple.of(2, Combinators.combine(pageOffsets(), pageLengths()).as(Allocate::new)),
                net.jqwik.api.Tuple.of(2, Combinators.combine(pageOffsets(), pageLengths()).as(Punch::new)),
                net.jqwik.api.Tuple.of(5, Combinators.combine(pageOffsets(), pageLengths(),
                        Arbitraries.of(Attribute.class), Arbitraries.of(Content.class)).as(Convert::new)),
                net.jqwik.api.Tuple.of(2, Combinators.combine(
                        Arbitraries.integers().between(0, PAGES).map(p -> (long) p * PAGE),
                        Arbitraries.integers().between(1, PAGES + 2).map(p -> (long) p * PAGE)).as(Map::new)),
                net.jqwik.api.Tuple.of(1, which.filter(w -> w > 0).map(Unmap::new)),
                net.jqwik.api.Tuple.of(5, Combinators.combine(which, Arbitraries.longs().between(0, SIZE),
                        Arbitraries.integers().between(1, 2 * PAGE), Arbitraries.bytes()).as(Write::new)),
                net.jqwik.api.Tuple.of(5, Combinators.combine(which, Arbitraries.longs().between(0, SIZE),
                        Arbitraries.integers().between(1, 2 * PAGE)).as(Read::new)),
                net.jqwik.api.Tuple.of(2, Combinators.combine(which, Arbitraries.longs().between(0, SIZE),
                        Arbitraries.integers().between(1, 2 * PAGE)).as(Lease::new)),
                net.jqwik.api.Tuple.of(1, which.map(Unlease::new)),
                net.jqwik.api.Tuple.of(2, Combinators.combine(pageOffsets(), pageLengths()).as(Pin::new)),
                net.jqwik.api.Tuple.of(2, which.map(Unpin::new)),
                net.jqwik.api.Tuple.of(1, Arbitraries.just(new Close())));
        return op.list().ofMinSize(5).ofMaxSize(60);
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
            int first = (int) (offset / PAGE);
            int end = (int) ((offset + length) / PAGE);
            boolean changes = false;
            for (int p = first; p < end; p++) {
                changes |= privatePage[p] != toPrivate;
            }
            if (!changes) {
                return null;
            }
            if (toPrivate) {
                for (long[] pin : pins) {
                    if (GuestMemory.overlaps(pin[0], pin[1], offset, length)) {
                        return "EAGAIN";
                    }
                }
                for (long[] lease : leases) {
                    if (GuestMemory.overlaps(lease[0], lease[1], offset, length)) {
                        lease[2] = 0;
                    }
                }
            }
            if (!(toPrivate ? keepsToPrivate : keepsToShared) && content == Content.PRESERVE) {
                return "EPERM";  // the owner refuses after the leases went, before any page changed
            }
            for (int p = first; p < end; p++) {
                if (privatePage[p] != toPrivate && content == Content.ZERO) {
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

    @Property(tries = 3000)
    @SuppressWarnings("try") // the Close operation closes the file inside its try block on purpose
    void theLibraryBehavesLikeThePerPageModel(@ForAll("operations") List<Op> ops, @ForAll Backing backing,
                                              @ForAll boolean initShared) {
        long flags = Flag.MMAP.bit() | (initShared ? Flag.INIT_SHARED.bit() : 0)
                | (backing == Backing.SECRET ? Flag.NO_DIRECT_MAP.bit() : 0);
        Model model = new Model(initShared);
        model.keepsToPrivate = ownerKeepsContent(true);
        model.keepsToShared = ownerKeepsContent(false);
        try (GuestMemory memory = createFile(SIZE, flags, backing)) {
            bindOwnerUnderTest(memory);
            memory.pinWait(java.time.Duration.ZERO);
            List<HostMapping> maps = new ArrayList<>();
            // Every sequence starts with one mapping of the whole file and two pages past its end.
            maps.add(memory.map(0, SIZE + 2L * PAGE));
            model.maps.add(new long[] {0, SIZE + 2L * PAGE});
            List<dev.guestmemfd.Lease> leases = new ArrayList<>();
            List<dev.guestmemfd.Pin> pins = new ArrayList<>();
            ChangeLog changes = memory.trackChanges();
            for (Op op : ops) {
                boolean[] privateBefore = model.privatePage.clone();
                byte[] bytesBefore = model.bytes.clone();
                switch (op) {
                    case Allocate a -> expect(model.allocate(a.offset(), a.length()), () -> memory.allocate(a.offset(), a.length()), op);
                    case Punch p -> {
                        String predicted = model.punch(p.offset(), p.length());
                        expect(predicted, () -> memory.punchHole(p.offset(), p.length()), op);
                    }
                    case Convert c -> expect(model.convert(c.offset(), c.length(), c.target(), c.content()),
                            () -> memory.convert(c.offset(), c.length(), c.target(), c.content()), op);
                    case Map m -> {
                        HostMapping[] got = new HostMapping[1];
                        expect(model.closed ? "EBADF" : null, () -> got[0] = memory.map(m.offset(), m.length()), op);
                        if (!model.closed) {
                            maps.add(got[0]);
                            model.maps.add(new long[] {m.offset(), m.length()});
                        }
                    }
                    case Close c -> {
                        memory.close();
                        model.closed = true;
                        model.leases.forEach(l -> l[2] = 0);
                    }
                    case Unmap u -> {
                        if (u.which() < maps.size()) {
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
                            net.jqwik.api.statistics.Statistics.label("read").collect(predicted == null ? (java.util.stream.IntStream.range(0, got[0].length).anyMatch(i -> got[0][i] != 0) ? "nonzero" : "zero") : predicted);
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
                            leases.remove(u.which()).close();
                            model.leases.remove(u.which());
                        }
                    }
                    case Pin p -> {
                        String predicted = model.pin(p.offset(), p.length());
                        dev.guestmemfd.Pin[] got = new dev.guestmemfd.Pin[1];
                        expect(predicted, () -> got[0] = memory.pin(p.offset(), p.length()), op);
                        if (predicted == null) {
                            pins.add(got[0]);
                            model.pins.add(new long[] {p.offset(), p.length()});
                        }
                    }
                    case Unpin u -> {
                        if (u.which() < pins.size()) {
                            pins.remove(u.which()).close();
                            model.pins.remove(u.which());
                        }
                    }
                }
                checkState(memory, model, leases, op);
                if (!model.closed) {
                    checkChangeLog(changes.drain(), privateBefore, bytesBefore, model, op);
                }
            }
        } finally {
            afterTry();
        }
    }

    static void expect(String errno, Runnable call, Op op) {
        if (errno == null) {
            call.run();
        } else {
            try {
                call.run();
                throw new AssertionError(op + ": expected " + errno + " but it succeeded");
            } catch (GuestMemoryException e) {
                assertThat(e.errno().name()).as("%s: %s", op, e.getMessage()).isEqualTo(errno);
            }
        }
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

    static void checkState(GuestMemory memory, Model model, List<dev.guestmemfd.Lease> leases, Op op) {
        for (int p = 0; p < PAGES && !model.closed; p++) {
            assertThat(memory.attribute((long) p * PAGE)).as("page %d after %s", p, op)
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
