package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.function.LongPredicate;
import org.junit.jupiter.api.DynamicContainer;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.Timeout;

/**
 * The hostile kit, argument part: every public method of the file, its mappings and
 * bindings, called with every class of bad argument (negative, zero, unaligned, past the end,
 * overflowing, {@code Long.MIN_VALUE}/{@code MAX_VALUE}, null, a closed receiver, a closed
 * argument) on every backing this host offers. Each call must be refused with the library's
 * exception and the errno the kernel gives for the same mistake, and leave the file as it
 * was: the same page runs, the same bytes in every allocated page (read through an owner's
 * binding, which sees private pages too), the same number of conversions.
 *
 * <p>The expected errno comes from a small oracle per method, written from the kernel's
 * order of checks; the argument values are the edge classes plus seeded random ones (the
 * seed is printed; {@code -Dgmem.hostile.seed=N} repeats it).
 */
class HostileArgumentsTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long PAGES = 16;
    /**
     * The size of the file under attack: 16 pages, or one huge page on a backing of huge
     * pages. Set by each {@link Fixture} (the backings run one after another), so that every
     * edge value lies around the file's real end.
     */
    static long SIZE = PAGES * PAGE;
    static final long MAXA = Long.MAX_VALUE & -PAGE;
    static final Set<Long> PRIVATE_PAGES = Set.of(5L, 9L, 10L);
    static final long SEED = Long.getLong("gmem.hostile.seed", System.nanoTime());
    static final int RANDOM_VALUES = 12;

    /** The edge classes; random ones are added from the seed. */
    static List<Long> values() {
        Set<Long> v = new LinkedHashSet<>(List.of(Long.MIN_VALUE, -PAGE, -1L, 0L, 1L, PAGE - 1, PAGE, 5 * PAGE,
                SIZE - PAGE, SIZE - 1, SIZE, SIZE + 1, SIZE + PAGE, 2 * SIZE, MAXA - PAGE, MAXA, MAXA + 1,
                Long.MAX_VALUE - PAGE + 2, Long.MAX_VALUE));
        SplittableRandom random = new SplittableRandom(SEED);
        for (int i = 0; i < RANDOM_VALUES; i++) {
            v.add(switch (i % 3) {
                case 0 -> random.nextLong(-2 * SIZE, 3 * SIZE) & -PAGE;   // aligned, around the file
                case 1 -> random.nextLong(-2 * SIZE, 3 * SIZE);           // anything around the file
                default -> random.nextLong();                            // anything
            });
        }
        return List.copyOf(v);
    }

    /** The file under attack, with a binding over all of it and a mapping that reaches past its end. */
    static final class Fixture implements AutoCloseable {
        final GuestMemory memory;
        final Binding binding;
        final HostMapping whole;
        final HostMapping pastEnd;

        Fixture(Backing backing) {
            SIZE = Math.max(PAGES * PAGE, backing.blockSize());
            memory = GuestMemory.create(SIZE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), backing);
            memory.allocate(0, 4 * PAGE);
            whole = memory.map(0, SIZE);
            byte[] shared = new byte[(int) (4 * PAGE)];
            new SplittableRandom(1).nextBytes(shared);
            whole.write(0, shared);
            for (long p : PRIVATE_PAGES) {
                memory.convert(p * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            }
            binding = memory.bind(new Owner() { }, 0, SIZE);
            binding.pages().asSlice(9 * PAGE, PAGE).fill((byte) 0x5e);  // a private secret
            pastEnd = memory.map(SIZE - 2 * PAGE, 8 * PAGE);
        }

        /** {@return the page runs, the conversions, and a digest of every allocated page's bytes} */
        String state() throws Exception {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            List<PageRun> runs = memory.pageRuns();
            for (PageRun run : runs) {
                if (run.allocated()) {
                    sha.update(binding.pages().asSlice(run.offset(), run.length()).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
                }
            }
            return runs + " conversions=" + memory.conversions() + " refs=" + binding.hostReferences(0, SIZE)
                    + " sha=" + HexFormat.of().formatHex(sha.digest());
        }

        @Override
        public void close() {
            memory.close();
        }
    }

    /** A call and the refusal it must end in: an errno, or {@code "NPE"} for a null argument. */
    record Case(String call, String expected, Call action, long errorOffset) {
        /** A refusal whose error offset is not checked. */
        Case(String call, String expected, Call action) {
            this(call, expected, action, Long.MIN_VALUE);
        }
    }

    interface Call {
        void run() throws Exception;
    }

    // ---------------------------------------------------------------- oracles

    static boolean aligned(long v) {
        return v % PAGE == 0;
    }

    /** convert, pin, bind: the range checks of KVM_SET_MEMORY_ATTRIBUTES and friends. */
    static String rangeErrno(long offset, long length) {
        if (offset < 0 || length <= 0 || !aligned(offset) || !aligned(length) || offset > SIZE || length > SIZE - offset) {
            return "EINVAL";
        }
        return null;
    }

    /** fallocate: the VFS first (negative, mode, overflow), then guest_memfd (alignment, end). */
    static String fallocateErrno(int mode, long offset, long length) {
        boolean punch = (mode & GuestMemory.PUNCH_HOLE) != 0;
        if (offset < 0 || length <= 0) {
            return "EINVAL";
        }
        if ((mode & ~(GuestMemory.KEEP_SIZE | GuestMemory.PUNCH_HOLE)) != 0 || (mode & GuestMemory.KEEP_SIZE) == 0) {
            return "EOPNOTSUPP";
        }
        if (offset > Long.MAX_VALUE - length) {
            return "EFBIG";
        }
        if (!aligned(offset) || !aligned(length)) {
            return "EINVAL";
        }
        if (!punch && (offset > SIZE || length > SIZE - offset)) {
            return "EINVAL";
        }
        return punch && offset >= SIZE ? "ok" : null;  // a punch past the end is a no-op: state must not change either
    }

    static String mapErrno(long offset, long length) {
        if (offset < 0 || !aligned(offset) || length <= 0) {
            return "EINVAL";
        }
        if (length > Long.MAX_VALUE - PAGE + 1 || offset > Long.MAX_VALUE - ((length + PAGE - 1) & -PAGE)) {
            return "EOVERFLOW";
        }
        return null;
    }

    /** Host access through a mapping of {@code [mapOffset, mapOffset + mapLength)}. */
    static String accessErrno(long mapOffset, long mapLength, long at, long bytes, boolean lease) {
        if (lease && bytes == 0) {
            return "EINVAL";
        }
        if (bytes < 0) {
            return "EINVAL";
        }
        if (at < 0 || at > mapLength - bytes) {
            return "EFAULT";
        }
        long from = mapOffset + at;
        if (from > SIZE || (from == SIZE && bytes > 0) || bytes > SIZE - from) {
            return "EFAULT";
        }
        if (bytes == 0) {
            return "ok";  // touches no byte, so no page: refused only outside the mapping or the file
        }
        for (long p = from / PAGE; p < (from + bytes + PAGE - 1) / PAGE; p++) {
            if (PRIVATE_PAGES.contains(p)) {
                return "EFAULT";
            }
        }
        return null;
    }

    static String populateErrno(long at, long bytes) {
        if (!aligned(at) || bytes == 0 || bytes > SIZE || at < 0 || at > SIZE - bytes) {
            return "EINVAL";
        }
        long rounded = (bytes + PAGE - 1) & -PAGE;
        if (at > SIZE - rounded) {
            return "EINVAL";
        }
        for (long p = at / PAGE; p < (at + rounded) / PAGE; p++) {
            if (!PRIVATE_PAGES.contains(p)) {
                return "EINVAL";  // populate writes private pages only
            }
        }
        return null;
    }

    // ---------------------------------------------------------------- the cases

    static List<Case> cases(Fixture f) {
        GuestMemory m = f.memory;
        List<Case> cases = new ArrayList<>();
        List<Long> values = values();
        for (long o : values) {
            for (long l : values) {
                String e;
                if ((e = fallocateErrno(GuestMemory.KEEP_SIZE, o, l)) != null) {
                    cases.add(new Case("allocate(" + o + ", " + l + ")", e, () -> m.allocate(o, l)));
                }
                if ((e = fallocateErrno(GuestMemory.KEEP_SIZE | GuestMemory.PUNCH_HOLE, o, l)) != null) {
                    cases.add(new Case("punchHole(" + o + ", " + l + ")", e, () -> m.punchHole(o, l)));
                }
                if ((e = rangeErrno(o, l)) != null) {
                    for (Attribute a : Attribute.values()) {
                        cases.add(new Case("convert(" + o + ", " + l + ", " + a + ")", e, () -> m.convert(o, l, a, Content.ZERO)));
                    }
                    cases.add(new Case("pin(" + o + ", " + l + ")", e, () -> m.pin(o, l).close()));
                    cases.add(new Case("bind(" + o + ", " + l + ")", e, () -> m.bind(new Owner() { }, o, l).close()));
                } else {
                    // Inside the file: the whole file is bound already, and pages 5, 9, 10 are private.
                    cases.add(new Case("bind(" + o + ", " + l + ") over a bound range", "EINVAL",
                            () -> m.bind(new Owner() { }, o, l).close()));
                    // The kernel's content-mode rule: ZERO only towards shared, whatever the pages' states.
                    cases.add(new Case("convert(" + o + ", " + l + ", PRIVATE, ZERO)", "EOPNOTSUPP",
                            () -> m.convert(o, l, Attribute.PRIVATE, Content.ZERO), o));
                    if (overPrivate(o, l)) {
                        cases.add(new Case("pin(" + o + ", " + l + ") over a private page", "EFAULT", () -> m.pin(o, l).close()));
                    }
                }
                if ((e = mapErrno(o, l)) != null) {
                    cases.add(new Case("map(" + o + ", " + l + ")", e, () -> m.map(o, l).close()));
                }
                for (HostMapping map : List.of(f.whole, f.pastEnd)) {
                    String where = "[" + map.offset() + "+" + map.length() + "]";
                    if ((e = accessErrno(map.offset(), map.length(), o, l, true)) != null) {
                        cases.add(new Case("lease" + where + "(" + o + ", " + l + ")", e, () -> map.lease(o, l).close()));
                    }
                    if ((e = accessErrno(map.offset(), map.length(), o, l, false)) != null) {
                        cases.add(new Case("prefault" + where + "(" + o + ", " + l + ")", e, () -> map.prefault(o, l)));
                        cases.add(new Case("access" + where + "(" + o + ", " + l + ")", e, () -> map.access(o, l, seg -> { })));
                        cases.add(new Case("compute" + where + "(" + o + ", " + l + ")", e, () -> map.compute(o, l, seg -> 0)));
                        if (l == (int) l && l <= 64 * PAGE) {
                            int n = (int) l;
                            cases.add(new Case("read" + where + "(" + o + ", int " + n + ")", e, () -> map.read(o, n)));
                            if (n >= 0) {
                                cases.add(new Case("write" + where + "(" + o + ", byte[" + n + "])", e, () -> map.write(o, new byte[n])));
                            }
                        }
                    }
                }
                if (l > 0 && l <= 64 * PAGE && (e = populateErrno(o, l)) != null) {
                    cases.add(new Case("populate(" + o + ", " + l + " bytes)", e,
                            () -> f.binding.populate(o, MemorySegment.ofArray(new byte[(int) l]), null)));
                }
                if (l <= 0 || o < 0 || o > SIZE - l) {
                    cases.add(new Case("hostReferences(" + o + ", " + l + ")", "EINVAL", () -> f.binding.hostReferences(o, l)));
                }
            }
            if (o < 0 || o >= SIZE) {
                cases.add(new Case("attribute(" + o + ")", "EINVAL", () -> m.attribute(o)));
            }
            if (o <= 0 || !aligned(o) || o % m.backing().blockSize() != 0) {
                cases.add(new Case("create(" + o + ")", "EINVAL", () -> GuestMemory.create(o, 0, m.backing()).close()));
            }
        }
        // Modes of fallocate.
        for (int mode : new int[] {0, GuestMemory.PUNCH_HOLE, -1, GuestMemory.KEEP_SIZE | 0x100, Integer.MIN_VALUE}) {
            cases.add(new Case("fallocate(mode=" + mode + ")", "EOPNOTSUPP", () -> m.fallocate(mode, 0, PAGE)));
        }
        cases.add(new Case("create(unknown flag bits)", "EINVAL", () -> GuestMemory.create(SIZE, 1L << 40, m.backing()).close()));
        cases.add(new Case("create(-1 flags)", "EINVAL", () -> GuestMemory.create(SIZE, -1, m.backing()).close()));
        // Durations.
        for (Duration d : List.of(Duration.ofNanos(-1), Duration.ofSeconds(Long.MIN_VALUE), Duration.ofSeconds(Long.MAX_VALUE),
                GuestMemory.MAX_PIN_WAIT.plusNanos(1), Duration.ofDays(365))) {
            cases.add(new Case("pinWait(" + d + ")", "EINVAL", () -> m.pinWait(d)));
        }
        // Nulls: NullPointerException naming the argument, before anything changes.
        cases.add(new Case("create(null backing)", "NPE", () -> GuestMemory.create(SIZE, 0, null)));
        cases.add(new Case("create(null flags)", "NPE", () -> GuestMemory.create(SIZE, null)));
        cases.add(new Case("convert(null target)", "NPE", () -> m.convert(0, PAGE, null, Content.ZERO)));
        cases.add(new Case("convert(null content)", "NPE", () -> m.convert(0, PAGE, Attribute.PRIVATE, null)));
        cases.add(new Case("map(null type)", "NPE", () -> m.map(0, PAGE, null)));
        cases.add(new Case("bind(null owner)", "NPE", () -> m.bind(null, 0, PAGE)));
        cases.add(new Case("pinWait(null)", "NPE", () -> m.pinWait(null)));
        cases.add(new Case("read(null)", "NPE", () -> f.whole.read(0, (MemorySegment) null)));
        cases.add(new Case("access(null action)", "NPE", () -> f.whole.access(0, PAGE, null)));
        cases.add(new Case("compute(null action)", "NPE", () -> f.whole.compute(0, PAGE, null)));
        cases.add(new Case("write(null segment)", "NPE", () -> f.whole.write(0, (MemorySegment) null)));
        cases.add(new Case("write(null array)", "NPE", () -> f.whole.write(0, (byte[]) null)));
        cases.add(new Case("populate(null)", "NPE", () -> f.binding.populate(5 * PAGE, null, null)));
        // Closed arguments and read-only destinations.
        MemorySegment closed;
        try (Arena arena = Arena.ofConfined()) {
            closed = arena.allocate(PAGE);
        }
        cases.add(new Case("read(into a closed segment)", "EFAULT", () -> f.whole.read(0, closed)));
        cases.add(new Case("write(from a closed segment)", "EFAULT", () -> f.whole.write(0, closed)));
        cases.add(new Case("read(into a read-only segment)", "EFAULT",
                () -> f.whole.read(0, MemorySegment.ofArray(new byte[(int) PAGE]).asReadOnly())));
        cases.add(new Case("populate(from a closed segment)", "EFAULT", () -> f.binding.populate(5 * PAGE, closed, null)));
        cases.add(new Case("populate(over shared pages)", "EINVAL",
                () -> f.binding.populate(0, MemorySegment.ofArray(new byte[1]), null)));
        return cases;
    }

    static boolean overPrivate(long offset, long length) {
        LongPredicate priv = p -> PRIVATE_PAGES.contains(p);
        for (long p = offset / PAGE; p < (offset + length) / PAGE; p++) {
            if (priv.test(p)) {
                return true;
            }
        }
        return false;
    }

    /** {@return why the case failed, or null when it was refused as expected and changed nothing} */
    static String check(Fixture f, Case c, String before) throws Exception {
        Throwable thrown = null;
        try {
            c.action().run();
        } catch (Throwable t) {
            thrown = t;
        }
        String problem = null;
        if (c.expected().equals("ok")) {
            if (thrown != null) {
                problem = "expected a no-op, got " + thrown;
            }
        } else if (c.expected().equals("NPE")) {
            if (!(thrown instanceof NullPointerException) || thrown.getMessage() == null) {
                problem = "expected a NullPointerException naming the argument, got " + thrown;
            }
        } else if (!(thrown instanceof GuestMemoryException g)) {
            problem = "expected " + c.expected() + ", got " + (thrown == null ? "a normal return" : thrown);
        } else if (!g.errno().name().equals(c.expected()) || !g.getMessage().contains(": " + c.expected() + ": ")) {
            problem = "expected " + c.expected() + ", got " + g.errno() + " (" + g.getMessage() + ")";
        } else if (c.errorOffset() != Long.MIN_VALUE && g.errorOffset() != c.errorOffset()) {
            problem = "expected error offset " + c.errorOffset() + ", got " + g.errorOffset();
        }
        String after = f.state();
        if (!after.equals(before)) {
            problem = (problem == null ? "" : problem + "; ") + "state changed:\n  before " + before + "\n  after  " + after;
        }
        return problem;
    }

    static DynamicTest run(String name, Backing backing, java.util.function.Function<Fixture, List<Case>> build) {
        return DynamicTest.dynamicTest(name, () -> {
            List<String> failures = new ArrayList<>();
            int n;
            try (Fixture f = new Fixture(backing)) {
                List<Case> cases = build.apply(f);
                n = cases.size();
                String before = f.state();
                for (Case c : cases) {
                    String problem = check(f, c, before);
                    if (problem != null) {
                        failures.add(c.call() + ": " + problem);
                        before = f.state();  // report each case once
                    }
                }
            }
            System.out.println("HostileArgumentsTest " + backing + " " + name + ": " + n + " calls, seed " + SEED);
            assertThat(failures).as(failures.size() + " of " + n + " calls misbehaved (seed " + SEED + ")").isEmpty();
        });
    }

    @TestFactory
    @Timeout(120)
    List<DynamicNode> everyPublicMethodRefusesEveryBadArgumentAndChangesNothing() {
        System.out.println("HostileArgumentsTest seed " + SEED + " (-Dgmem.hostile.seed=" + SEED + " repeats it)");
        List<DynamicNode> nodes = new ArrayList<>();
        for (Backing backing : Backing.available()) {
            nodes.add(DynamicContainer.dynamicContainer(backing.name(), List.of(
                    run("arguments", backing, HostileArgumentsTest::cases),
                    run("the issue's measured cases", backing, HostileArgumentsTest::measured),
                    run("closed receivers", backing, HostileArgumentsTest::closedReceivers))));
        }
        return nodes;
    }

    /** The cases measured in issue 14, pinned by name. */
    static List<Case> measured(Fixture f) {
        GuestMemory m = f.memory;
        return List.of(
                new Case("punchHole(4096, MAXA)", "EFBIG", () -> m.punchHole(PAGE, MAXA)),
                new Case("punchHole(MAXA, 4096)", "EFBIG", () -> m.punchHole(MAXA, PAGE)),
                new Case("allocate(4096, MAXA)", "EFBIG", () -> m.allocate(PAGE, MAXA)),
                new Case("map(MAXA, Long.MAX_VALUE)", "EOVERFLOW", () -> m.map(MAXA, Long.MAX_VALUE).close()),
                new Case("read(at, -1)", "EINVAL", () -> f.whole.read(0, -1)),
                new Case("lease(past the mapping, 0)", "EINVAL", () -> f.whole.lease(SIZE + PAGE, 0)),
                new Case("read(past the mapping, 0)", "EFAULT", () -> f.whole.read(SIZE + PAGE, 0)),
                new Case("read(past the file inside the mapping, 0)", "EFAULT", () -> f.pastEnd.read(4 * PAGE, 0)),
                new Case("lease(5 * 4096, 0) over a private page", "EINVAL", () -> f.whole.lease(5 * PAGE, 0)),
                new Case("pinWait(Long.MAX_VALUE s)", "EINVAL", () -> m.pinWait(Duration.ofSeconds(Long.MAX_VALUE))),
                new Case("bind(null, ...)", "NPE", () -> m.bind(null, 0, PAGE)));
    }

    /**
     * A closed file, mapping and binding refuse everything (EBADF; EFAULT for an unmapped
     * mapping, as an access outside every mapping); the fixture, open, does not change.
     */
    static List<Case> closedReceivers(Fixture f) {
        Backing backing = f.memory.backing();
        long flags = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
        GuestMemory closed = GuestMemory.create(SIZE, flags, backing);
        HostMapping mapOfClosed = closed.map(0, SIZE);
        Binding bindingOfClosed = closed.bind(new Owner() { }, 0, SIZE);
        closed.close();
        HostMapping unmapped = f.memory.map(0, SIZE);
        unmapped.close();
        GuestMemory other = GuestMemory.create(SIZE, flags, backing);
        other.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        List<String> callsAfterRelease = new ArrayList<>();
        Binding unbound = other.bind(new Owner() {
            boolean released;

            @Override
            public void release(Binding b) {
                released = true;
            }

            @Override
            public void populate(Binding b, long offset, long length) {
                if (released) {
                    callsAfterRelease.add("populate");
                }
            }
        }, 0, SIZE);
        unbound.close();
        List<Case> cases = new ArrayList<>(List.of(
                new Case("closed file: allocate", "EBADF", () -> closed.allocate(0, PAGE)),
                new Case("closed file: punchHole", "EBADF", () -> closed.punchHole(0, PAGE)),
                new Case("closed file: punchHole(overflowing)", "EBADF", () -> closed.punchHole(PAGE, MAXA)),
                new Case("closed file: convert private", "EBADF", () -> closed.convert(0, PAGE, Attribute.PRIVATE, Content.ZERO)),
                new Case("closed file: convert shared", "EBADF", () -> closed.convert(0, PAGE, Attribute.SHARED, Content.ZERO)),
                new Case("closed file: map", "EBADF", () -> closed.map(0, PAGE).close()),
                new Case("closed file: pin", "EBADF", () -> closed.pin(0, PAGE).close()),
                new Case("closed file: bind", "EBADF", () -> closed.bind(new Owner() { }, 0, PAGE).close()),
                new Case("closed file: pageRuns", "EBADF", closed::pageRuns),
                new Case("closed file: pageCounts", "EBADF", closed::pageCounts),
                new Case("closed file: attribute", "EBADF", () -> closed.attribute(0)),
                new Case("closed file: fd", "EBADF", closed::fd),
                new Case("closed file: trackChanges", "EBADF", () -> closed.trackChanges().close()),
                new Case("closed file: pinWait", "EBADF", () -> closed.pinWait(Duration.ofMillis(1))),
                new Case("closed file: close again", "ok", closed::close),
                new Case("mapping of a closed file: lease", "EBADF", () -> mapOfClosed.lease(0, PAGE)),
                new Case("mapping of a closed file: read", "EBADF", () -> mapOfClosed.read(0, 1)),
                new Case("mapping of a closed file: write", "EBADF", () -> mapOfClosed.write(0, new byte[1])),
                new Case("mapping of a closed file: prefault", "EBADF", () -> mapOfClosed.prefault(0, PAGE)),
                new Case("mapping of a closed file: access", "EBADF", () -> mapOfClosed.access(0, PAGE, seg -> { })),
                new Case("binding of a closed file: populate", "EBADF",
                        () -> bindingOfClosed.populate(0, MemorySegment.ofArray(new byte[1]), null)),
                new Case("binding of a closed file: hostReferences", "EBADF", () -> bindingOfClosed.hostReferences(0, PAGE)),
                new Case("binding of a closed file: pages", "ok", () -> {
                    assertThat(bindingOfClosed.isClosed()).isTrue();
                    assertThat(bindingOfClosed.pages().scope().isAlive()).as("pages of a closed binding").isFalse();
                }),
                new Case("unmapped mapping: lease", "EFAULT", () -> unmapped.lease(0, PAGE)),
                new Case("unmapped mapping: read", "EFAULT", () -> unmapped.read(0, 1)),
                new Case("unmapped mapping: write", "EFAULT", () -> unmapped.write(0, new byte[1])),
                new Case("unmapped mapping: prefault", "EFAULT", () -> unmapped.prefault(0, PAGE)),
                new Case("unmapped mapping: access", "EFAULT", () -> unmapped.access(0, PAGE, seg -> { })),
                new Case("unbound binding: populate", "EBADF", () -> unbound.populate(0, MemorySegment.ofArray(new byte[1]), null)),
                new Case("unbound binding: hostReferences", "EBADF", () -> unbound.hostReferences(0, PAGE)),
                new Case("unbound binding: close again", "ok", unbound::close),
                new Case("unbound binding: the range binds again", "ok", () -> other.bind(new Owner() { }, 0, SIZE).close()),
                new Case("unbound binding: its owner heard nothing after release", "ok", () -> {
                    other.close();
                    assertThat(callsAfterRelease).isEmpty();
                })));
        return cases;
    }
}
