package dev.guestmemfd;

import dev.guestmemfd.internal.PageStates;
import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.LinuxException;
import dev.guestmemfd.linux.Userfaultfd;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * A restore that is ready at once: the file gets its final layout (which pages are private,
 * which are holes) immediately, and each page's bytes arrive when first touched, or earlier
 * through a background pull, from a {@link PageSource}.
 *
 * <p>Three ways a page arrives, one state per page deciding who brings it (exactly once):
 * <ul>
 * <li>the guest, or any native code, touching the owner's mapping of the file (the
 *     {@link Binding#pages()} address a memslot names): the fault waits in the kernel
 *     (userfaultfd, MISSING mode) while a server thread fetches the page and copies it in
 *     ({@code UFFDIO_COPY}); a hole is answered with a zero page and never reaches the source;</li>
 * <li>host code through the library (host mapping reads, writes, accesses, leases, pins,
 *     conversions, punches, populate): the library brings the range in on the calling thread
 *     <em>before</em> any Java code can touch it;</li>
 * <li>the background pull: pages just after recent faults first, then ascending.</li>
 * </ul>
 *
 * <p>Why Java code never touches a page that is not there yet: a Java thread blocked in a
 * fault is "in Java" for the JVM, so every safepoint waits for it; the thread that serves the
 * fault, a Java thread too, would then wait at that safepoint for ever. Native code (a vCPU in
 * {@code KVM_RUN}, a system call) faulting is harmless: it is at a safepoint already. So the
 * library fetches before it hands out or touches a range, and only its own mapping of the file
 * (the owner's view) is registered: the host's view is not, so a bug there reads a zero page
 * (and the restore fails loudly when it later finds the page taken) instead of hanging the JVM.
 * An owner's own Java code that reads {@link Binding#pages()} directly calls {@link #fetch}
 * first, or waits for {@link #awaitResident}.
 *
 * <p>Integrity: a private page's record is sealed and opens (its tag checked) before its bytes
 * land; shared records are covered only by the digest sealed at the end of the stream, which
 * is checked once every page is resident. Until then the file is <em>not complete</em>. When a
 * fetch or the final check fails, the restore fails loudly: {@link #await} throws, every later
 * host access to the file through the library throws {@code EBADMSG} (or {@code EIO} for a
 * source that died), pages not yet fetched are poisoned (a native access fails instead of
 * waiting), and the {@link #onFailure} listeners (an owner that stops its vCPUs) run. Nothing
 * is quietly zero-filled.
 *
 * <p>Backings: the restore is lazy on memfd (shmem) and on hugetlb. On hugetlb the kernel fills
 * a missing page only whole, so there the <em>fetch unit</em> is the huge page (the file's
 * block size): a fault, a library access or the pull brings the whole huge page around the
 * page it needs, assembled from every 4 KiB page of it the source has bytes for (zeros for the
 * rest: see {@link HugePageFetch}), with one copy; the page state, and so the exactly-once
 * rule, is kept per huge page. The kernel refuses to register a memfd_secret or a guest_memfd
 * mapping: on those two the restore is done eagerly before {@link #start} returns, and
 * {@link #eagerReason()} says why.
 *
 * @implSpec Thread safe.
 */
public final class LazyRestore implements AutoCloseable {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    /** Pages the pull brings after a fault, before going back to ascending order. */
    private static final int AFTER_FAULT = 16;
    private static final int MAX_SAMPLES = 1 << 20;

    /**
     * Counters of one restore.
     *
     * @param pagesFetched pages copied into the file from the source: each page with bytes once
     * @param faults       faults that fetched a page from the source
     * @param zeroFaults   faults answered with a zero page (holes) or that found the page there
     * @param hostFetches  fetches made for host code through the library
     * @param pulled       fetches made by the background pull
     * @param faultP50Us   median time to serve a page on demand (a fault or a library access
     *                     that fetched), microseconds: from the demand to the page in the file
     * @param faultP99Us   99th percentile of the same
     * @param firstAccessNanos from {@link #start} to the file being usable (the return of start)
     * @param residentNanos from {@link #start} until every page was in the file, or -1
     */
    public record Stats(long pagesFetched, long faults, long zeroFaults, long hostFetches, long pulled, double faultP50Us,
                        double faultP99Us, long firstAccessNanos, long residentNanos) {
    }

    private final GuestMemory memory;
    private final BindingCover cover;
    private final PageSource source;
    private final PageStates states;
    private final long startNanos;
    private final String eagerReason;
    private final Userfaultfd uffd;
    private final long base;
    /** Bytes per fetch unit, each with one state: the page, or the huge page of a hugetlb file. */
    private final long unit;
    /** Assembles whole huge pages; null where the unit is the page. */
    private final HugePageFetch huge;
    /** Bytes a fault's zero or poison answer fills: the huge page on hugetlb, else the page. */
    private final long fill;
    private final CountDownLatch resident = new CountDownLatch(1);
    private final CountDownLatch settled = new CountDownLatch(1);
    private final List<Consumer<Throwable>> failureListeners = new ArrayList<>();
    private final AtomicLong pagesFetched = new AtomicLong();
    private final AtomicLong faults = new AtomicLong();
    private final AtomicLong zeroFaults = new AtomicLong();
    private final AtomicLong hostFetches = new AtomicLong();
    private final AtomicLong pulled = new AtomicLong();
    private final Object samples = new Object();
    /** Grows as faults come: eight MiB up front would be a millisecond or more before the start returns. */
    private long[] faultNanos = new long[1024];  // guarded by samples
    private int faultSamples;  // guarded by samples
    private volatile long hint = -1;
    private volatile boolean stopping;
    private volatile boolean complete;
    private volatile RuntimeException failure;
    private volatile long firstAccessNanos = -1;
    private volatile long residentNanos = -1;
    private volatile Thread server;
    /** Started by the server thread, first thing. */
    private volatile Thread pull;

    private LazyRestore(BindingCover cover, PageSource source, Userfaultfd uffd, String eagerReason, long startNanos, long unit) {
        this.cover = cover;
        this.memory = cover.memory();
        this.source = source;
        this.uffd = uffd;
        this.eagerReason = eagerReason;
        this.startNanos = startNanos;
        this.base = memory.pages().address();
        this.unit = unit;
        this.huge = unit == PAGE ? null : new HugePageFetch(unit, source);
        this.fill = memory.backing().isHugetlb() ? unit : PAGE;
        this.states = new PageStates((int) (memory.size() / unit));
    }

    /** Whether this JVM has begun linking the calls of a lazy restore ({@link #prepare}). */
    private static final AtomicBoolean PREPARING = new AtomicBoolean();

    /**
     * Begins, on a short-lived thread of its own, what every lazy restore pays once per JVM:
     * linking the native calls it makes (userfaultfd, its ioctls, {@code poll}, {@code read},
     * {@code fstat}), tens of milliseconds in a fresh JVM. Returns at once; only the first call
     * does anything. {@link #start} calls it itself, so the linking runs while it lays the file
     * out; a VMM that is going to restore lazily calls it earlier still, before it opens its
     * {@link PageSource}, so that the linking also overlaps reading the source's index. Nothing
     * is opened or registered for longer than the linking takes, and a host without userfaultfd
     * only loses the thread.
     */
    public static void prepare() {
        if (PREPARING.compareAndSet(false, true)) {
            Thread.ofPlatform().daemon().name("gmem-uffd-link").start(new Linker());
        }
    }

    /** The body of {@link #prepare}: a class, not a lambda, so that starting it links no call site. */
    private static final class Linker implements Runnable {
        @Override
        public void run() {
            try (Userfaultfd uffd = Userfaultfd.open(Userfaultfd.FEATURE_POISON)) {
                uffd.link();
                Fd.fstat(uffd.fd());
            } catch (LinuxException e) {
                // no userfaultfd here: start() finds out and restores eagerly
            }
        }
    }

    /**
     * Starts restoring {@code source} into an empty file whose owners' bindings together cover
     * it: gives the file the source's layout, hands the owner state records to {@code states},
     * and returns once the file can be used (lazily), or once it is restored and checked
     * (eagerly, on a backing userfaultfd does not serve).
     *
     * @throws GuestMemoryException {@code EINVAL} for bindings that do not cover one file, a
     *                              file of another size, one that already holds memory or a
     *                              null argument; {@code EBADMSG} on an eager restore whose
     *                              source does not check out (the file is empty again)
     * @throws IOException when an eager restore cannot read its source
     */
    public static LazyRestore start(List<Binding> owners, PageSource source, Consumer<byte[]> states) throws IOException {
        return start(owners, source, states, 0);
    }

    /**
     * {@link #start(List, PageSource, Consumer)} with the fetch unit given: {@code fetchUnit}
     * bytes (a power of two from the page up that divides the file), or 0 for the file's own
     * (the huge page on hugetlb, the page elsewhere). A unit above the page on a memfd runs the
     * huge-page path on a file of 4 KiB pages, for tests on hosts without a hugetlb pool.
     */
    static LazyRestore start(List<Binding> owners, PageSource source, Consumer<byte[]> states, long fetchUnit)
            throws IOException {
        long started = System.nanoTime();
        prepare();  // links userfaultfd's calls on another thread while this one lays the file out
        BindingCover cover = BindingCover.of(owners, "lazyRestore");
        GuestMemory memory = cover.memory();
        String op = "lazyRestore(size=" + memory.size() + ")";
        long unit = fetchUnit != 0 ? fetchUnit : memory.backing().isHugetlb() ? memory.blockSize() : PAGE;
        if (unit < Math.max(PAGE, memory.blockSize()) || Long.bitCount(unit) != 1 || memory.size() % unit != 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "a fetch unit of " + unit + " bytes is no power of two from"
                    + " the file's block (" + memory.blockSize() + " bytes) up that divides the file", -1);
        }
        if (source == null || states == null) {
            throw new GuestMemoryException(Errno.EINVAL, op, "a source and a receiver of owner state must be given", -1);
        }
        if (source.fileSize() != memory.size()) {
            throw new GuestMemoryException(Errno.EINVAL, op, "the source is of a " + source.fileSize() + "-byte file", -1);
        }
        // On a memfd the kernel counts the allocated blocks: none means empty, without the
        // residency scan of every page (tens of ms per GiB, the largest part of the start).
        boolean emptyMemfd = memory.backing() == Backing.MEMFD && Fd.fstat(memory.fd()).blocks() == 0;
        List<PageRun> before = memory.pageRuns(!emptyMemfd);
        for (PageRun run : before) {
            if (run.allocated()) {
                throw new GuestMemoryException(Errno.EINVAL, op, "the target file already holds memory (at offset "
                        + run.offset() + ")", run.offset());
            }
        }
        for (byte[] state : source.ownerStates()) {
            states.accept(state);
        }
        // The layout first: the file is empty, so each conversion only flips attributes and
        // asks the owners; a private page is private before its bytes exist.
        try {
            for (PageRun run : attributeRuns(source.layout())) {
                if (!alreadyIs(before, run)) {
                    memory.convert(run.offset(), run.length(), run.attribute(), emptyFileMode(run.attribute()));
                }
            }
        } catch (RuntimeException e) {
            undoLayout(memory, before, e);
            throw e;
        }
        Userfaultfd uffd = null;
        String eager = null;
        try {
            uffd = Userfaultfd.open(Userfaultfd.FEATURE_POISON);
            uffd.register(memory.pages().address(), memory.size());
        } catch (LinuxException e) {
            if (uffd != null) {
                uffd.close();
                uffd = null;
            }
            eager = "userfaultfd does not serve the " + memory.backing() + " backing here (" + e.getMessage() + ")";
        }
        LazyRestore restore = new LazyRestore(cover, source, uffd, eager, started, unit);
        for (PageRun run : source.layout()) {
            if (run.allocated()) {
                // every unit that holds a page with bytes: on hugetlb, the huge pages around the run
                restore.states.expect((int) (run.offset() / unit), (int) ((run.offset() + run.length() + unit - 1) / unit));
            }
        }
        if (uffd == null) {
            restore.restoreEagerly(before);
            return restore;
        }
        memory.lazyRestore = restore;  // from here on, library access fetches first
        restore.firstAccessNanos = System.nanoTime() - started;
        // The server starts the pull: a thread start less before the file is usable.
        restore.server = Thread.ofPlatform().daemon().name("gmem-uffd-" + memory.fd()).start(restore.new Serving());
        return restore;
    }

    /** {@return the layout's runs merged by attribute alone: one conversion per run of equal attribute} */
    private static List<PageRun> attributeRuns(List<PageRun> layout) {
        List<PageRun> merged = new ArrayList<>();
        for (PageRun run : layout) {
            PageRun last = merged.isEmpty() ? null : merged.getLast();
            if (last != null && last.attribute() == run.attribute() && last.offset() + last.length() == run.offset()) {
                merged.set(merged.size() - 1, new PageRun(last.offset(), last.length() + run.length(), run.attribute(), false));
            } else {
                merged.add(run);
            }
        }
        return merged;
    }

    /** {@return true when every page of {@code run} already has its attribute in {@code before}} */
    private static boolean alreadyIs(List<PageRun> before, PageRun run) {
        long end = run.offset() + run.length();
        for (PageRun b : before) {
            if (b.offset() < end && run.offset() < b.offset() + b.length() && b.attribute() != run.attribute()) {
                return false;
            }
        }
        return true;
    }

    /** {@return the content mode for flipping an empty file's run: ZERO is a mode towards shared only} */
    private static Content emptyFileMode(Attribute target) {
        return target == Attribute.SHARED ? Content.ZERO : Content.UNSPECIFIED;
    }

    /** Puts the attributes back as they were before the layout, after {@code cause}. */
    private static void undoLayout(GuestMemory memory, List<PageRun> before, Throwable cause) {
        try {
            for (PageRun run : before) {
                memory.convert(run.offset(), run.length(), run.attribute(), emptyFileMode(run.attribute()));
            }
        } catch (RuntimeException failed) {
            cause.addSuppressed(failed);
        }
    }

    /** The restore without userfaultfd: every extent copied in, then the source checked; undone on failure. */
    private void restoreEagerly(List<PageRun> before) throws IOException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buffer = arena.allocate(SnapshotFormat.CHUNK, PAGE);
            for (int u = huge == null ? -1 : states.nextAbsent(0); u >= 0; u = states.nextAbsent(u + 1)) {
                // huge pages whose mapping userfaultfd refused: each assembled whole, then copied in
                MemorySegment into = huge.take();
                try {
                    int withBytes = huge.assemble(u * unit, into, buffer);
                    MemorySegment.copy(into, 0, memory.pages(), u * unit, unit);
                    states.claim(u);
                    states.finish(u, u + 1, PageStates.DONE);
                    pagesFetched.addAndGet(withBytes);
                    pulled.incrementAndGet();
                } finally {
                    huge.giveBack(into);
                }
            }
            for (int p = huge != null ? -1 : states.nextAbsent(0); p >= 0; p = states.nextAbsent(p + 1)) {
                PageSource.Extent extent = source.extent(p * PAGE);
                source.read(extent, buffer);
                MemorySegment.copy(buffer, 0, memory.pages(), extent.offset(), extent.length());
                buffer.fill((byte) 0);
                int first = (int) (extent.offset() / PAGE);
                int end = (int) ((extent.offset() + extent.length()) / PAGE);
                for (int q = first; q < end; q++) {
                    states.claim(q);
                }
                states.finish(first, end, PageStates.DONE);
                pagesFetched.addAndGet(end - first);
                pulled.incrementAndGet();
                p = end - 1;
            }
            residentNanos = System.nanoTime() - startNanos;
            source.verify();
        } catch (IOException | RuntimeException e) {
            memory.punchHole(0, memory.size());
            undoLayout(memory, before, e);
            forgetReplay();
            throw e;
        }
        firstAccessNanos = System.nanoTime() - startNanos;
        complete = true;
        resident.countDown();
        settled.countDown();
    }

    // ---------------------------------------------------------------- fetching

    /** Per thread: a staging buffer for one extent, and the ioctl argument blocks. */
    private static final class Scratch {
        final MemorySegment buffer;
        final MemorySegment copyArgs;
        final MemorySegment fillArgs;

        Scratch() {
            Arena arena = Arena.ofAuto();
            buffer = arena.allocate(SnapshotFormat.CHUNK, PAGE);
            copyArgs = arena.allocate(Userfaultfd.COPY);
            fillArgs = arena.allocate(Userfaultfd.ZEROPAGE);
        }
    }

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

    /**
     * Brings in the extent around page {@code p}, which the caller claimed: the pages of it
     * still absent next to {@code p} are claimed too and copied in with one {@code UFFDIO_COPY}.
     * On failure the claimed pages fail and the restore fails.
     */
    private void fetchClaimed(int p) {
        if (huge != null) {
            fetchHugePage(p);
            return;
        }
        int first = p;
        int end = p + 1;
        try {
            PageSource.Extent extent = source.extent(p * PAGE);
            int extentFirst = (int) (extent.offset() / PAGE);
            int extentEnd = (int) ((extent.offset() + extent.length()) / PAGE);
            while (first > extentFirst && states.claim(first - 1)) {
                first--;
            }
            while (end < extentEnd && states.claim(end)) {
                end++;
            }
            Scratch scratch = SCRATCH.get();
            source.read(extent, scratch.buffer);
            long from = (first - extentFirst) * PAGE;
            long length = (end - first) * PAGE;
            long copied;
            do {
                copied = uffd.copy(scratch.copyArgs, base + first * PAGE, scratch.buffer.address() + from, length);
            } while (copied == -dev.guestmemfd.linux.Errno.EAGAIN.number());
            scratch.buffer.asSlice(0, extent.length()).fill((byte) 0);  // private bytes do not linger
            if (copied != length) {
                throw new GuestMemoryException(Errno.EIO, "lazyRestore", "page at offset " + (first * PAGE + Math.max(0, copied))
                        + " was filled outside the restore (" + (copied < 0 ? dev.guestmemfd.linux.Errno.nameOf((int) -copied)
                        : "partial copy") + "): its bytes cannot be trusted", first * PAGE);
            }
            pagesFetched.addAndGet(end - first);
            states.finish(first, end, PageStates.DONE);
        } catch (IOException | RuntimeException e) {
            // The failure first: a thread that waits on these pages wakes to find it set.
            fail(e instanceof GuestMemoryException g ? g
                    : new GuestMemoryException(Errno.EIO, "lazyRestore", "the page source failed: " + e, p * PAGE));
            states.finish(first, end, PageStates.FAILED);
        }
    }

    /**
     * Brings in the huge page {@code u}, which the caller claimed: assembled whole (every 4 KiB
     * page of it with bytes, zeros elsewhere) and copied in with one {@code UFFDIO_COPY}, the
     * only fill the kernel accepts on hugetlb. On failure the huge page fails and the restore
     * fails.
     */
    private void fetchHugePage(int u) {
        long at = u * unit;
        MemorySegment into = huge.take();
        try {
            Scratch scratch = SCRATCH.get();
            int withBytes = huge.assemble(at, into, scratch.buffer);
            long copied;
            do {
                copied = uffd.copy(scratch.copyArgs, base + at, into.address(), unit);
            } while (copied == -dev.guestmemfd.linux.Errno.EAGAIN.number());
            if (copied != unit) {
                throw new GuestMemoryException(Errno.EIO, "lazyRestore", "huge page at offset " + at + " was filled outside"
                        + " the restore (" + (copied < 0 ? dev.guestmemfd.linux.Errno.nameOf((int) -copied) : "partial copy")
                        + "): its bytes cannot be trusted", at);
            }
            pagesFetched.addAndGet(withBytes);
            states.finish(u, u + 1, PageStates.DONE);
        } catch (IOException | RuntimeException e) {
            fail(e instanceof GuestMemoryException g ? g
                    : new GuestMemoryException(Errno.EIO, "lazyRestore", "the page source failed: " + e, at));
            states.finish(u, u + 1, PageStates.FAILED);
        } finally {
            huge.giveBack(into);  // private bytes do not linger
        }
    }

    /**
     * Makes {@code [offset, offset + length)} resident before the caller touches it: the hook
     * of every library access. Returns at once when the restore is complete.
     *
     * @throws GuestMemoryException {@code EBADMSG} or {@code EIO} once the restore failed
     */
    void ensureResident(String op, long offset, long length) {
        if (complete) {
            return;
        }
        RuntimeException failed = failure;
        if (failed != null) {
            throw failedAccess(op, failed);
        }
        if (offset < 0 || length <= 0 || offset >= memory.size()) {
            return;  // the access's own checks refuse it
        }
        // the units (pages, or huge pages) around the range
        int first = (int) (offset / unit);
        int end = (int) Math.min(states.pages(), (Math.min(memory.size() - offset, length) + offset + unit - 1) / unit);
        for (int p = first; p < end; p++) {
            byte state = states.get(p);
            if (state == PageStates.ABSENT && states.claim(p)) {
                long start = System.nanoTime();
                hostFetches.incrementAndGet();
                fetchClaimed(p);
                sample(System.nanoTime() - start);
                state = states.get(p);
            } else {
                // Read ABSENT but lost the claim, or read FETCHING: another thread brings the
                // page. Wait for it whatever was read: going on would let the caller touch a
                // page not yet there (zeros through the host's mapping, which also make the
                // fetcher's copy fail as "filled outside the restore").
                try {
                    state = states.await(p);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new GuestMemoryException(Errno.EINTR, op, "interrupted while the page at offset " + p * unit
                            + " was being fetched", p * unit);
                }
            }
            if (state == PageStates.FAILED || failure != null) {
                throw failedAccess(op, failure);
            }
        }
    }

    private static GuestMemoryException failedAccess(String op, RuntimeException failure) {
        Errno errno = failure instanceof GuestMemoryException g ? g.errno() : Errno.EIO;
        GuestMemoryException e = new GuestMemoryException(errno, op, "the lazy restore of this file failed: "
                + (failure == null ? "a page could not be fetched" : failure.getMessage()), -1);
        if (failure != null) {
            e.initCause(failure);
        }
        return e;
    }

    /** Fails the restore once: pages not yet fetched fail, waiters wake, listeners hear. */
    private void fail(RuntimeException cause) {
        List<Consumer<Throwable>> listeners;
        synchronized (this) {
            if (failure != null || complete) {
                return;
            }
            failure = cause;
            listeners = List.copyOf(failureListeners);
        }
        states.failAbsent();
        forgetReplay();
        settled.countDown();
        resident.countDown();
        for (Consumer<Throwable> listener : listeners) {
            try {
                listener.accept(cause);
            } catch (RuntimeException ignored) {
                // a listener's failure does not hide the restore's
            }
        }
    }

    private void forgetReplay() {
        if (source instanceof SnapshotFileSource file) {
            file.forget();
        } else if (source instanceof SnapshotStreamSource stream) {
            stream.forget();
        }
    }

    // ---------------------------------------------------------------- the two threads

    /** The server thread's body: a class, not a method reference, so that starting it links no call site. */
    private final class Serving implements Runnable {
        @Override
        public void run() {
            serve();
        }
    }

    /** The fault server: reads faults and answers each one. */
    private void serve() {
        if (!stopping) {
            pull = Thread.ofPlatform().daemon().name("gmem-pull-" + memory.fd()).start(this::pullAll);
        }
        while (!stopping) {
            long[] addresses;
            try {
                addresses = uffd.poll(50);
            } catch (LinuxException e) {
                fail(new GuestMemoryException(Errno.EIO, "lazyRestore", "userfaultfd failed: " + e.getMessage(), -1));
                return;
            }
            for (long address : addresses) {
                long start = System.nanoTime();
                int p = (int) ((address - base) / unit);
                if (address < base || p >= states.pages()) {
                    continue;
                }
                hint = p + 1;
                byte state = states.get(p);
                if (state == PageStates.ABSENT && states.claim(p)) {
                    fetchClaimed(p);
                    faults.incrementAndGet();
                    sample(System.nanoTime() - start);
                    if (states.get(p) == PageStates.FAILED) {
                        answerSettled(address, PageStates.FAILED);  // the waiter fails instead of waiting on
                    }
                    continue;
                }
                try {
                    state = states.await(p);
                } catch (InterruptedException e) {
                    return;
                }
                answerSettled(address, state);
            }
        }
    }

    /**
     * Answers a fault at {@code faultAddress} on a page nobody fetches (any more): a hole, or a
     * page punched since, reads zero; a page whose fetch failed is poisoned, so the access fails
     * instead of waiting. On hugetlb both fill the whole huge page: the kernel refuses
     * {@code UFFDIO_ZEROPAGE} there, so the zeros are copied.
     */
    private void answerSettled(long faultAddress, byte state) {
        Scratch scratch = SCRATCH.get();
        long address = base + (faultAddress - base) / fill * fill;
        long rc;
        if (state == PageStates.FAILED) {
            rc = uffd.poison(scratch.fillArgs, address, fill);
        } else {
            zeroFaults.incrementAndGet();
            if (fill == PAGE) {
                rc = uffd.zeroPage(scratch.fillArgs, address, PAGE);
            } else {
                do {
                    rc = uffd.copy(scratch.copyArgs, address, huge.zeros().address(), fill);
                } while (rc == -dev.guestmemfd.linux.Errno.EAGAIN.number());
            }
        }
        if (rc < 0) {
            try {
                uffd.wake(address, fill);  // EEXIST: the page is there; the waiter only needs waking
            } catch (LinuxException e) {
                // the range is gone (the file closes): nothing waits there any more
            }
        }
    }

    private void sample(long nanos) {
        synchronized (samples) {
            if (faultSamples == faultNanos.length && faultSamples < MAX_SAMPLES) {
                faultNanos = Arrays.copyOf(faultNanos, Math.min(MAX_SAMPLES, faultSamples * 2));
            }
            if (faultSamples < MAX_SAMPLES) {
                faultNanos[faultSamples++] = nanos;
            }
        }
    }

    /** The background pull: pages after the latest fault first, then ascending; then the final check. */
    private void pullAll() {
        int cursor = 0;
        while (!stopping && failure == null && states.remaining() > 0) {
            long after = hint;
            if (after >= 0) {
                hint = -1;
                // 16 pages after a fault; on huge pages, the next huge page
                for (int p = (int) after; p < Math.min(states.pages(), after + (huge == null ? AFTER_FAULT : 1)); p++) {
                    if (states.claim(p)) {
                        pulled.incrementAndGet();
                        fetchClaimed(p);
                    }
                }
            }
            int p = states.nextAbsent(cursor);
            if (p < 0) {
                if (cursor == 0) {
                    waitForOthers();
                }
                cursor = 0;
                continue;
            }
            if (states.claim(p)) {
                pulled.incrementAndGet();
                fetchClaimed(p);
            }
            cursor = p + 1;
        }
        if (stopping || failure != null) {
            return;
        }
        residentNanos = System.nanoTime() - startNanos;
        resident.countDown();
        try {
            source.verify();
        } catch (IOException | RuntimeException e) {
            fail(e instanceof GuestMemoryException g ? g
                    : new GuestMemoryException(Errno.EIO, "lazyRestore", "the page source failed: " + e, -1));
            return;
        }
        finish();
    }

    /** No page is absent, some are still being fetched by others: wait a moment for them. */
    private void waitForOthers() {
        try {
            Thread.sleep(1);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            stopping = true;
        }
    }

    /** Every page is in and the source checked out: userfaultfd lets go, library access runs free. */
    private void finish() {
        synchronized (this) {
            if (failure != null) {
                return;
            }
            complete = true;
        }
        memory.lazyRestore = null;
        stopping = true;
        joinQuietly(server);
        uffd.close();  // unregisters the range: faults are the kernel's own again
        settled.countDown();
    }

    private static void joinQuietly(Thread thread) {
        if (thread == null || thread == Thread.currentThread()) {
            return;
        }
        try {
            thread.join(TimeUnit.SECONDS.toMillis(10));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    // ---------------------------------------------------------------- the handle

    /**
     * Brings {@code [offset, offset + length)} in now, on the calling thread: for an owner whose
     * own Java code is about to read {@link Binding#pages()} there.
     *
     * @throws GuestMemoryException {@code EBADMSG} or {@code EIO} once the restore failed
     */
    public void fetch(long offset, long length) {
        ensureResident("fetch(offset=" + offset + ", len=" + length + ")", offset, length);
    }

    /** {@return true once every page is in the file, or the restore failed, within {@code timeout}} */
    public boolean awaitResident(Duration timeout) throws InterruptedException {
        return resident.await(timeout.toNanos(), TimeUnit.NANOSECONDS);
    }

    /**
     * Waits until the restore is complete: every page in and the source checked.
     *
     * @return false when {@code timeout} passed first
     * @throws GuestMemoryException the restore's failure: {@code EBADMSG} for a source that did
     *                              not check out, {@code EIO} for one that could not be read
     */
    public boolean await(Duration timeout) throws InterruptedException {
        if (!settled.await(timeout.toNanos(), TimeUnit.NANOSECONDS)) {
            return false;
        }
        RuntimeException failed = failure;
        if (failed != null) {
            throw failedAccess("lazyRestore", failed);
        }
        return true;
    }

    /** {@return true once every page is in and the source checked out} */
    public boolean isComplete() {
        return complete;
    }

    /** {@return the failure, once the restore failed} */
    public Optional<RuntimeException> failure() {
        return Optional.ofNullable(failure);
    }

    /** {@return why the restore was done eagerly, where it was} */
    public Optional<String> eagerReason() {
        return Optional.ofNullable(eagerReason);
    }

    /** Runs {@code listener} with the cause if the restore fails (at once if it already has). */
    public void onFailure(Consumer<Throwable> listener) {
        RuntimeException failed;
        synchronized (this) {
            failed = failure;
            if (failed == null) {
                failureListeners.add(listener);
                return;
            }
        }
        listener.accept(failed);
    }

    /** {@return the restore's counters so far} */
    public Stats stats() {
        long[] sorted;
        synchronized (samples) {
            sorted = Arrays.copyOf(faultNanos, faultSamples);
        }
        Arrays.sort(sorted);
        return new Stats(pagesFetched.get(), faults.get(), zeroFaults.get(), hostFetches.get(), pulled.get(), percentileUs(sorted, 0.50),
                percentileUs(sorted, 0.99), firstAccessNanos, residentNanos);
    }

    private static double percentileUs(long[] sorted, double q) {
        if (sorted.length == 0) {
            return 0;
        }
        return sorted[(int) Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] / 1000.0;
    }

    /**
     * Stops the restore. A complete one has nothing to stop. An incomplete one fails
     * ({@code EIO}): pages not fetched are poisoned, so native code reaching them fails
     * instead of waiting, and library access to the file fails. Idempotent; the source is
     * closed.
     */
    @Override
    public void close() {
        if (!complete) {
            fail(new GuestMemoryException(Errno.EIO, "lazyRestore", "the restore was closed before it completed", -1));
        }
        stopping = true;
        joinQuietly(server);  // first: the server starts the pull, so after it the pull is known
        joinQuietly(pull);
        if (uffd != null && !uffd.isClosed() && !complete) {
            poisonUnfetched();
            uffd.close();
        }
        try {
            source.close();
        } catch (IOException ignored) {
            // the source was only read
        }
    }

    /** Marks every page without its bytes poisoned, so closing the descriptor cannot zero-fill them. */
    private void poisonUnfetched() {
        Scratch scratch = SCRATCH.get();
        for (int p = 0; p < states.pages(); p++) {
            if (states.get(p) == PageStates.FAILED) {
                int end = p + 1;
                while (end < states.pages() && states.get(end) == PageStates.FAILED) {
                    end++;
                }
                try {
                    uffd.poison(scratch.fillArgs, base + p * unit, (end - p) * unit);
                } catch (LinuxException e) {
                    // the mapping is gone: nothing can reach the pages
                }
                p = end;
            }
        }
    }
}
