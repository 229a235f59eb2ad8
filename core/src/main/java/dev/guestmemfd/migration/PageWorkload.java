package dev.guestmemfd.migration;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Content;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostMapping;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A workload that stands in for a running guest and its host during a memory-only migration:
 * it fills a share of the file's pages, half of them private, and then keeps rewriting
 * pages from a thread of its own, the shared ones through a {@link HostMapping} (as host code
 * does) and the private ones through the owner's {@link Binding#pages()} (as the guest does).
 * Every page's bytes follow from the page's index and how often it was written, so that the
 * destination can check each page's attribute and bytes from the small state this workload
 * carries ({@link #check()}).
 *
 * @implSpec The writer thread is the only one that writes the file; {@link #pause()} waits for
 * its write in flight. Holes stay holes: the workload never writes a page it did not fill.
 */
public final class PageWorkload implements GuestActivity, CarriedState, AutoCloseable {
    /** The kind of this state. */
    public static final String KIND = "page-workload";
    /** Pages of one attribute run: conversions are made a run at a time. */
    private static final int RUN = 64;
    /** The longest marker a workload writes at the start of its private pages. */
    public static final int MAX_MARKER = 1024;
    private static final byte[] NO_MARKER = new byte[0];
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    private final Binding binding;
    private final long seed;
    private final byte[] marker;
    /** How often each page was written; -1 for a page the workload never filled (a hole). */
    private final int[] versions;
    private final boolean[] privatePages;
    private final int[] filled;
    private final HostMapping host;
    private final long writesPerSecond;
    private final ReentrantLock writing = new ReentrantLock();
    private final BitSet ownerWritten = new BitSet();
    private final Thread writer;
    private volatile boolean stopped;
    private long writes;

    private PageWorkload(Binding binding, double allocatedShare, long seed, long writesPerSecond, byte[] marker) {
        this.binding = binding;
        this.seed = seed;
        this.marker = marker.clone();
        this.writesPerSecond = writesPerSecond;
        GuestMemory memory = binding.memory();
        int pages = Math.toIntExact(memory.size() / PAGE);
        versions = new int[pages];
        privatePages = new boolean[pages];
        List<Integer> chosen = new ArrayList<>();
        long threshold = (long) (allocatedShare * (1L << 24));
        for (int p = 0; p < pages; p++) {
            privatePages[p] = (mix(seed ^ 0x5eed, p / RUN) & 1) == 1;
            boolean fill = (mix(seed, p) >>> 40) < threshold;
            versions[p] = fill ? 0 : -1;
            if (fill) {
                chosen.add(p);
            }
        }
        filled = chosen.stream().mapToInt(Integer::intValue).toArray();
        for (int run = 0; run * RUN < pages; run++) {
            if (privatePages[run * RUN]) {
                long offset = run * RUN * PAGE;
                // UNSPECIFIED: the file holds no memory yet, and ZERO is a mode towards shared only.
                memory.convert(offset, Math.min(RUN * PAGE, memory.size() - offset), Attribute.PRIVATE, Content.UNSPECIFIED);
            }
        }
        host = memory.map(0, memory.size());
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment page = arena.allocate(PAGE, 8);
            for (int p : filled) {
                write(page, p);
            }
        }
        writer = Thread.ofPlatform().name("page-workload").daemon().unstarted(this::run);
    }

    /**
     * {@return a workload over the whole file {@code owner} binds, its pages filled and its writer
     * running} The file must be mappable, all shared, and hold no memory yet.
     *
     * @param allocatedShare  the share of pages to fill, 0 to 1
     * @param seed            chooses the pages and their bytes
     * @param writesPerSecond how many pages the writer rewrites per second, about; 0 for none
     * @throws IllegalArgumentException for a share outside 0 to 1 or a negative rate
     */
    public static PageWorkload start(Binding owner, double allocatedShare, long seed, long writesPerSecond) {
        return start(owner, allocatedShare, seed, writesPerSecond, new byte[0]);
    }

    /**
     * {@return a workload as {@link #start(Binding, double, long, long)} makes, whose private
     * pages each begin with {@code marker}} A known text in every private page lets a test
     * look for it where it must never appear: on the wire, in a relay's recording.
     *
     * @throws IllegalArgumentException also for a marker longer than {@value #MAX_MARKER} bytes
     */
    public static PageWorkload start(Binding owner, double allocatedShare, long seed, long writesPerSecond,
                                     byte[] marker) {
        if (!(allocatedShare >= 0 && allocatedShare <= 1) || writesPerSecond < 0) {
            throw new IllegalArgumentException("the share must be between 0 and 1 and the rate not negative");
        }
        if (marker.length > MAX_MARKER) {
            throw new IllegalArgumentException("a marker of " + marker.length + " bytes; at most " + MAX_MARKER);
        }
        PageWorkload w = new PageWorkload(owner, allocatedShare, seed, writesPerSecond, marker);
        if (writesPerSecond > 0) {
            w.writer.start();
        }
        return w;
    }

    /** {@return the pages the workload filled} */
    public int filledPages() {
        return filled.length;
    }

    /** {@return the pages rewritten since the start; read it paused or closed} */
    public long writes() {
        writing.lock();
        try {
            return writes;
        } finally {
            writing.unlock();
        }
    }

    private void run() {
        long next = System.nanoTime();
        long interval = 1_000_000_000L / Math.max(1, writesPerSecond);
        long i = 0;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment page = arena.allocate(PAGE, 8);
            while (!stopped && filled.length > 0) {
                writing.lockInterruptibly();
                try {
                    if (stopped) {
                        return;
                    }
                    int p = filled[(int) Long.remainderUnsigned(mix(seed ^ 0x77, i++), filled.length)];
                    versions[p]++;
                    write(page, p);
                    writes++;
                } finally {
                    writing.unlock();
                }
                next += interval;
                long wait = next - System.nanoTime();
                if (wait > 0) {
                    Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
                }
            }
        } catch (InterruptedException e) {
            // closed
        }
    }

    /** Writes page {@code p} at its version: shared through the host mapping, private through the owner's. */
    private void write(MemorySegment page, int p) {
        fill(page, seed, p, versions[p], privatePages[p] ? marker : NO_MARKER);
        if (privatePages[p]) {
            MemorySegment.copy(page, 0, binding.pages(), p * PAGE, PAGE);
            synchronized (ownerWritten) {
                ownerWritten.set(p);
            }
        } else {
            host.write(p * PAGE, page);
        }
    }

    private static void fill(MemorySegment page, long seed, int p, int version, byte[] marker) {
        long base = mix(seed, ((long) p << 32) | version);
        for (int i = 0; i < PAGE / 8; i++) {
            page.setAtIndex(ValueLayout.JAVA_LONG, i, base + i * 0x9E3779B97F4A7C15L);
        }
        MemorySegment.copy(marker, 0, page, ValueLayout.JAVA_BYTE, 0, marker.length);
    }

    private static long mix(long seed, long x) {
        long z = seed + x * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    @Override
    public void pause() {
        writing.lock();
    }

    @Override
    public void resume() {
        writing.unlock();
    }

    @Override
    public BitSet written() {
        synchronized (ownerWritten) {
            BitSet taken = (BitSet) ownerWritten.clone();
            ownerWritten.clear();
            return taken;
        }
    }

    @Override
    public String kind() {
        return KIND;
    }

    /** {@return u64 seed, u32 pages, per page i32 version (-1: a hole) and u8 private, then u16 length and the marker} */
    @Override
    public byte[] exportState() {
        return encode(seed, versions, privatePages, marker);
    }

    /** A source's workload takes no state: import it into a {@link #check()}. */
    @Override
    public void importState(byte[] state) {
        throw new IllegalArgumentException("a running workload takes no state; import it into PageWorkload.check()");
    }

    /** Stops the writer and unmaps; the file stays open. Idempotent. */
    @Override
    public void close() {
        stopped = true;
        writer.interrupt();
        try {
            writer.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        host.close();
    }

    /** Into one buffer of the exact size: a data stream's call per field took tens of ms at 1 GiB, inside a post-copy's pause. */
    private static byte[] encode(long seed, int[] versions, boolean[] privatePages, byte[] marker) {
        ByteBuffer out = ByteBuffer.allocate(Math.toIntExact(14 + versions.length * 5L + marker.length));
        out.putLong(seed);
        out.putInt(versions.length);
        for (int p = 0; p < versions.length; p++) {
            out.putInt(versions[p]);
            out.put((byte) (privatePages[p] ? 1 : 0));
        }
        out.putShort((short) marker.length);
        out.put(marker);
        return out.array();
    }

    /** {@return an empty check, for the destination: it takes a workload's state and checks a file against it} */
    public static Check check() {
        return new Check();
    }

    /** The destination's half: what the workload wrote, and whether the file shows it. */
    public static final class Check implements CarriedState {
        private long seed;
        private int[] versions;
        private boolean[] privatePages;
        private byte[] marker;

        private Check() {
        }

        @Override
        public String kind() {
            return KIND;
        }

        @Override
        public byte[] exportState() {
            if (versions == null) {
                throw new IllegalStateException("the check holds no state yet");
            }
            return encode(seed, versions, privatePages, marker);
        }

        @Override
        public void importState(byte[] state) {
            try {
                ByteBuffer in = ByteBuffer.wrap(state);
                long s = in.getLong();
                int pages = in.getInt();
                if (pages < 0 || state.length < 14 + 5L * pages) {
                    throw new IllegalArgumentException("a workload state of " + state.length + " bytes for "
                            + pages + " pages");
                }
                int[] v = new int[pages];
                boolean[] priv = new boolean[pages];
                for (int p = 0; p < pages; p++) {
                    v[p] = in.getInt();
                    priv[p] = in.get() != 0;
                }
                int markerLength = Short.toUnsignedInt(in.getShort());
                if (markerLength > MAX_MARKER || state.length != 14 + 5L * pages + markerLength) {
                    throw new IllegalArgumentException("a workload state of " + state.length + " bytes for "
                            + pages + " pages and a marker of " + markerLength);
                }
                byte[] m = new byte[markerLength];
                in.get(m);
                seed = s;
                marker = m;
                versions = v;
                privatePages = priv;
            } catch (BufferUnderflowException e) {
                throw new IllegalArgumentException("the workload state is cut", e);
            }
        }

        /**
         * {@return what differs between the file {@code owner} binds and what the workload
         * wrote, at most 10 pages' worth; empty when every page's attribute and bytes arrived}
         * Filled pages hold their last bytes with their attribute; the others read zero.
         */
        public List<String> verify(Binding owner) {
            if (versions == null) {
                throw new IllegalStateException("the check holds no state yet");
            }
            GuestMemory memory = owner.memory();
            List<String> problems = new ArrayList<>();
            if (memory.size() != versions.length * PAGE) {
                problems.add("the file has " + memory.size() + " bytes, the workload wrote a " + versions.length * PAGE
                        + "-byte file");
                return problems;
            }
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment expected = arena.allocate(PAGE, 8);
                MemorySegment zero = arena.allocate(PAGE, 8);
                for (int p = 0; p < versions.length && problems.size() < 10; p++) {
                    Attribute want = privatePages[p] ? Attribute.PRIVATE : Attribute.SHARED;
                    Attribute got = memory.attribute(p * PAGE);
                    if (got != want) {
                        problems.add("page " + p + " is " + got + ", the workload left it " + want);
                    }
                    MemorySegment bytes = owner.pages().asSlice(p * PAGE, PAGE);
                    MemorySegment should = zero;
                    if (versions[p] >= 0) {
                        fill(expected, seed, p, versions[p], privatePages[p] ? marker : NO_MARKER);
                        should = expected;
                    }
                    if (bytes.mismatch(should) != -1) {
                        problems.add("page " + p + " does not hold the bytes of "
                                + (versions[p] >= 0 ? "write " + versions[p] : "a hole"));
                    }
                }
            }
            return problems;
        }
    }
}
