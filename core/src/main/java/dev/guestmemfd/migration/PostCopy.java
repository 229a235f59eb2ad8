package dev.guestmemfd.migration;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.LazyRestore;
import dev.guestmemfd.PageRun;
import dev.guestmemfd.PageSource;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.Objects;
import java.util.function.Function;
import javax.crypto.SecretKey;

/**
 * Post-copy memory-only migration: the destination runs on at once, and the pages follow.
 *
 * <ol>
 *   <li>The source sends the {@link FileDescription}; the destination creates the file and
 *       answers READY.</li>
 *   <li>The source pauses its {@link GuestActivity} and sends LAYOUT: which pages exist and
 *       their attributes, the poisoned pages, and every {@link CarriedState}. No page bytes.</li>
 *   <li>The destination gives its file that layout, binds the owner, imports the carried
 *       states and resumes: its pages are restored lazily ({@link LazyRestore}) from a
 *       {@link PageSource} that asks the source for each 64 KiB extent (REQUEST), urgently
 *       for a fault or a library access, ahead for the background pull, which goes in order.
 *       The source answers each extent once (PAGES), urgent ones first; a second time only
 *       when asked so explicitly (see {@link Report#extentsResent()}).</li>
 *   <li>Once every page is in, the destination says RESIDENT; the source answers RELEASED and
 *       returns: its copy may go. Only then is the destination's restore complete.</li>
 * </ol>
 *
 * <p>Every message is sealed with a key derived from the session's ({@link PostCopyFrames}),
 * so private pages travel sealed and an altered or replayed message ends the migration with
 * {@code EBADMSG}. If the channel breaks before the release, the destination's restore fails
 * ({@code EIO}): pages not yet moved are poisoned, accesses to them fail, a thread waiting on
 * one wakes with the error within the timeout, and the workload stops there. The source,
 * which still holds every page, resumes its activity: the guest carries on there. After
 * RELEASED the destination holds every page and the source lets go.
 */
public final class PostCopy {
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    private PostCopy() {
    }

    /**
     * What the source did.
     *
     * @param pausedToResumedNs  from the pause to the arrival of the destination's word that it runs again, on this
     *                           end's clock alone (right between hosts too)
     * @param pausedToReleasedNs from the pause to the destination holding every page
     * @param totalNs            from the start to the release
     * @param bytesSent          bytes written to the channel
     * @param memoryBytes        the file's size
     * @param extentsServed      extents sent, each once
     * @param urgentServed       of those, asked for by a fault or a library access at the destination
     * @param pagesServed        pages sent, each once
     * @param extentsResent      extents sent a second time: the destination let go of one that two
     *                           of its threads had read in parts (rare)
     */
    public record Report(long pausedToResumedNs, long pausedToReleasedNs, long totalNs, long bytesSent, long memoryBytes,
                         long extentsServed, long urgentServed, long pagesServed, long extentsResent) {
    }

    /**
     * The destination's file, running, its pages still arriving.
     *
     * @param bindings      the owners' bindings, which together cover the file once (one, for
     *                      {@link #receive(InputStream, OutputStream, SecretKey, Function, Duration)})
     * @param carried       the objects that took the carried states
     * @param restore       the lazy restore bringing the pages: await it, or close it to stop
     * @param pausedAtNanos the source's {@code System.nanoTime()} at its pause (one host only)
     * @param resumedAtNanos this end's {@code System.nanoTime()} once the file could be used
     * @param layout        the file's runs as the source sent them (poisoned pages as holes)
     */
    public record Arrival(List<Binding> bindings, List<CarriedState> carried, LazyRestore restore, long pausedAtNanos,
                          long resumedAtNanos, List<PageRun> layout) {
        /** Copies the lists. */
        public Arrival {
            bindings = List.copyOf(bindings);
            carried = List.copyOf(carried);
            layout = List.copyOf(layout);
        }

        /**
         * {@return the owner's binding over the whole file}
         *
         * @throws IllegalStateException when several bindings cover the file
         */
        public Binding binding() {
            if (bindings.size() != 1) {
                throw new IllegalStateException(bindings.size() + " bindings cover the file");
            }
            return bindings.getFirst();
        }

        /** {@return the file} */
        public GuestMemory memory() {
            return bindings.getFirst().memory();
        }
    }

    /**
     * A destination whose owners are bound already (a VM's memslots), for
     * {@link #receiveInto}.
     *
     * @param bindings bindings of an empty file as described, which together cover it once
     * @param carried  where the carried states go
     */
    public record Target(List<Binding> bindings, List<CarriedState> carried) {
        /** Copies the lists. */
        public Target {
            bindings = List.copyOf(bindings);
            carried = List.copyOf(carried);
        }
    }

    // ------------------------------------------------------------------ the source

    /**
     * Migrates the file {@code source} covers by post-copy. Returns once the destination holds
     * every page and the source released it; the activity stays paused and the caller closes
     * the file. When it throws, the activity runs again on the source's file, whole.
     *
     * @param timeout the longest the destination may stay silent while pages remain
     * @throws GuestMemoryException {@code EINVAL} for a null argument; {@code EBADMSG} for a
     *                              message that does not open or a request outside the layout
     *                              or repeated
     * @throws IOException          when the channel fails or the destination goes away
     */
    public static Report send(Binding source, GuestActivity activity, List<? extends CarriedState> carried,
                              InputStream from, OutputStream to, SecretKey key, Duration timeout) throws IOException {
        if (source == null) {
            throw new GuestMemoryException(Errno.EINVAL, "postCopy", "an argument is null", -1);
        }
        return send(List.of(source), activity, carried, from, to, key, timeout);
    }

    /**
     * Migrates the file that {@code sources} (a VM's memslots, say) cover together, once, by
     * post-copy; otherwise as {@link #send(Binding, GuestActivity, List, InputStream, OutputStream, SecretKey, Duration)}.
     *
     * @throws GuestMemoryException {@code EINVAL} also for bindings that do not cover one file once
     */
    public static Report send(List<Binding> sources, GuestActivity activity, List<? extends CarriedState> carried,
                              InputStream from, OutputStream to, SecretKey key, Duration timeout) throws IOException {
        long start = System.nanoTime();
        if (sources == null || sources.stream().anyMatch(Objects::isNull) || activity == null || carried == null
                || carried.stream().anyMatch(Objects::isNull) || from == null || to == null || key == null || timeout == null) {
            throw new GuestMemoryException(Errno.EINVAL, "postCopy", "an argument is null", -1);
        }
        List<Binding> source = cover(sources);
        GuestMemory memory = source.getFirst().memory();
        CountingOutputStream counting = new CountingOutputStream(to);
        PostCopyFrames frames = new PostCopyFrames(key, true, from, counting, "the destination");
        frames.send(PostCopyFrames.DESCRIBE, FileDescription.of(memory, carried).encode());
        PostCopyFrames.Frame ready = frames.receive();
        if (ready.type() != PostCopyFrames.READY) {
            throw frames.bad("message of type " + ready.type() + " instead of READY");
        }
        boolean paused = false;
        Requests requests = null;
        try {
            long pausedAt = System.nanoTime();
            paused = true;  // before the call: a pause that throws half-way is resumed too
            activity.pause();
            List<PageRun> layout = layout(memory);
            frames.send(PostCopyFrames.LAYOUT, encodeLayout(pausedAt, layout, memory.poisonedPages(), carried));
            requests = new Requests(frames, timeout);
            Served served = serve(source, layout, frames, requests);
            frames.send(PostCopyFrames.RELEASED, new byte[0]);
            long releasedAt = System.nanoTime();
            return new Report(requests.resumedAt() - pausedAt, releasedAt - pausedAt, releasedAt - start, counting.count(),
                    memory.size(), served.extents, served.urgent, served.pages, served.resent);
        } catch (IOException | RuntimeException e) {
            if (paused) {
                activity.resume();  // the source holds every page: the guest carries on here
            }
            throw e;
        } finally {
            if (requests != null) {
                requests.stop();
            }
        }
    }

    /**
     * {@return {@code bindings} in offset order, checked to cover one file once, without a gap}
     *
     * @throws GuestMemoryException {@code EINVAL} when they do not
     */
    private static List<Binding> cover(List<Binding> bindings) {
        List<Binding> sorted = bindings.stream().sorted(java.util.Comparator.comparingLong(Binding::offset)).toList();
        if (sorted.isEmpty()) {
            throw new GuestMemoryException(Errno.EINVAL, "postCopy", "no binding covers the file", -1);
        }
        GuestMemory memory = sorted.getFirst().memory();
        long next = 0;
        for (Binding b : sorted) {
            if (b.memory() != memory || b.offset() != next) {
                throw new GuestMemoryException(Errno.EINVAL, "postCopy", "the bindings do not cover one file once (at offset "
                        + next + ")", next);
            }
            next = b.offset() + b.length();
        }
        if (next != memory.size()) {
            throw new GuestMemoryException(Errno.EINVAL, "postCopy", "the bindings end at " + next + " of a "
                    + memory.size() + "-byte file", next);
        }
        return sorted;
    }

    /**
     * Copies file bytes {@code [offset, offset + length)} from the owners' views into {@code body} at {@code at}.
     *
     * @throws GuestMemoryException {@code EBADF} when the source's file was closed (or a binding let go) while it serves:
     *                              the memory API reports the owner's view gone as a closed segment
     */
    private static void copyOut(List<Binding> source, long offset, long length, byte[] body, int at) {
        for (Binding b : source) {
            long from = Math.max(offset, b.offset());
            long end = Math.min(offset + length, b.offset() + b.length());
            if (from < end) {
                try {
                    MemorySegment.copy(b.pages(), ValueLayout.JAVA_BYTE, from - b.offset(), body, (int) (at + from - offset),
                            (int) (end - from));
                } catch (IllegalStateException closed) {
                    throw new GuestMemoryException(Errno.EBADF, "postCopy", "the source's file was closed while its pages moved",
                            from);
                }
            }
        }
    }

    /** The file's runs, its poisoned pages as holes (no bytes travel for a failed page). */
    private static List<PageRun> layout(GuestMemory memory) {
        BitSet poisoned = new BitSet();
        for (long offset : memory.poisonedPages()) {
            poisoned.set(Math.toIntExact(offset / PAGE));
        }
        List<PageRun> runs = new ArrayList<>();
        for (PageRun run : memory.pageRuns()) {
            int first = Math.toIntExact(run.offset() / PAGE);
            int end = Math.toIntExact((run.offset() + run.length()) / PAGE);
            int p = first;
            while (p < end) {
                boolean failed = poisoned.get(p);
                int q = failed ? poisoned.nextClearBit(p) : nextSetOr(poisoned, p, end);
                q = Math.min(q, end);
                runs.add(new PageRun(p * PAGE, (q - p) * PAGE, run.attribute(), run.allocated() && !failed));
                p = q;
            }
        }
        return runs;
    }

    private static int nextSetOr(BitSet bits, int from, int otherwise) {
        int next = bits.nextSetBit(from);
        return next < 0 ? otherwise : next;
    }

    /** Into one buffer of the exact size: a data stream's call per field took tens of ms for 1 GiB of runs, in the pause. */
    private static byte[] encodeLayout(long pausedAt, List<PageRun> runs, List<Long> poisoned,
                                       List<? extends CarriedState> carried) {
        List<byte[]> states = new ArrayList<>(carried.size());
        long bytes = 8 + 4 + 18L * runs.size() + 4 + 8L * poisoned.size() + 4;
        for (CarriedState state : carried) {
            byte[] exported = state.exportState();
            states.add(exported);
            bytes += 4 + exported.length;
        }
        ByteBuffer out = ByteBuffer.allocate(Math.toIntExact(bytes));
        out.putLong(pausedAt);
        out.putInt(runs.size());
        for (PageRun run : runs) {
            out.putLong(run.offset());
            out.putLong(run.length());
            out.put((byte) (run.attribute() == Attribute.PRIVATE ? 1 : 0));
            out.put((byte) (run.allocated() ? 1 : 0));
        }
        out.putInt(poisoned.size());
        for (long offset : poisoned) {
            out.putLong(offset);
        }
        out.putInt(states.size());
        for (byte[] exported : states) {
            out.putInt(exported.length);
            out.put(exported);
        }
        return out.array();
    }

    private record Served(long extents, long urgent, long pages, long resent) {
    }

    /** Sends each extent asked for, once, urgent ones first, until the destination says every page is in. */
    private static Served serve(List<Binding> source, List<PageRun> layout, PostCopyFrames frames, Requests requests)
            throws IOException {
        BitSet served = new BitSet();
        long allocated = layout.stream().filter(PageRun::allocated).mapToLong(PageRun::length).sum();
        long extents = 0;
        long urgent = 0;
        long pages = 0;
        long resent = 0;
        long size = source.getFirst().memory().size();
        while (true) {
            long[] request = requests.next();
            if (request == null) {  // RESIDENT
                if (pages * PAGE != allocated) {
                    throw frames.bad("RESIDENT after " + pages * PAGE + " of " + allocated + " bytes");
                }
                return new Served(extents, urgent, pages, resent);
            }
            long offset = request[0];
            long length = request[1];
            PageSource.Extent extent = offset < 0 || offset >= size ? null : RemotePageSource.extentOf(layout, offset);
            if (extent == null || extent.offset() != offset || extent.length() != length) {
                throw frames.bad("a request for " + length + " bytes at offset " + offset + " that is no extent");
            }
            int index = Math.toIntExact(offset / PAGE);
            boolean again = (request[2] & RemotePageSource.AGAIN) != 0;
            if (served.get(index) != again) {
                throw frames.bad("the extent at offset " + offset + (again ? " was not sent before" : " was asked for twice"));
            }
            served.set(index);
            byte[] body = new byte[(int) (12 + length)];
            ByteBuffer.wrap(body).putLong(offset).putInt((int) length);
            copyOut(source, offset, length, body, 12);
            frames.send(PostCopyFrames.PAGES, body);
            Arrays.fill(body, (byte) 0);  // private bytes do not linger on the heap
            if (again) {
                resent++;
            } else {
                extents++;
                pages += length / PAGE;
            }
            if ((request[2] & RemotePageSource.URGENT) != 0) {
                urgent++;
            }
        }
    }

    /** The source's reader of the destination's messages: requests queued, urgent ones first. */
    private static final class Requests {
        private final PostCopyFrames frames;
        private final long timeoutNanos;
        private final ArrayDeque<long[]> urgent = new ArrayDeque<>();
        private final ArrayDeque<long[]> ahead = new ArrayDeque<>();
        private final Thread reader;
        private boolean resident;
        private long resumedAt = -1;
        private IOException failure;

        Requests(PostCopyFrames frames, Duration timeout) {
            this.frames = frames;
            this.timeoutNanos = timeout.toNanos();
            this.reader = Thread.ofPlatform().daemon().name("gmem-postcopy-requests").start(this::read);
        }

        private void read() {
            try {
                while (true) {
                    PostCopyFrames.Frame frame = frames.receive();
                    ByteBuffer in = frame.payload();
                    synchronized (this) {
                        switch (frame.type()) {
                            case PostCopyFrames.REQUEST -> {
                                long[] r = {in.getLong(), in.getInt(), in.get()};
                                if ((r[2] & ~(RemotePageSource.URGENT | RemotePageSource.AGAIN)) != 0) {
                                    throw frames.bad("a request with unknown flags " + r[2]);
                                }
                                (r[2] != 0 ? urgent : ahead).addLast(r);
                            }
                            case PostCopyFrames.RESUMED -> {
                                in.getLong();  // the destination's clock, which means nothing on this host
                                resumedAt = System.nanoTime();
                            }
                            case PostCopyFrames.RESIDENT -> {
                                resident = true;
                                notifyAll();
                                return;
                            }
                            default -> throw frames.bad("message of type " + frame.type() + " during post-copy");
                        }
                        if (in.hasRemaining()) {
                            throw frames.bad("message of type " + frame.type() + " is too long");
                        }
                        notifyAll();
                    }
                }
            } catch (BufferUnderflowException e) {
                fail(frames.bad("a message is cut short"));
            } catch (GuestMemoryException e) {
                fail(e);
            } catch (IOException | RuntimeException e) {
                fail(e instanceof IOException io ? io : new IOException(e));
            }
        }

        private synchronized void fail(Exception e) {
            failure = e instanceof IOException io ? io : new IOException("post-copy: " + e.getMessage(), e);
            notifyAll();
        }

        /** {@return the next request (offset, length, urgent), or null once every page is in} */
        synchronized long[] next() throws IOException {
            long deadline = System.nanoTime() + timeoutNanos;
            while (true) {
                if (!urgent.isEmpty()) {
                    return urgent.removeFirst();
                }
                if (!ahead.isEmpty()) {
                    return ahead.removeFirst();
                }
                if (resident) {
                    return null;
                }
                if (failure != null) {
                    if (failure.getCause() instanceof GuestMemoryException g) {
                        throw g;
                    }
                    throw failure;
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new IOException("post-copy: the destination asked for nothing in " + Duration.ofNanos(timeoutNanos));
                }
                try {
                    wait(Math.max(1, left / 1_000_000));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while serving post-copy", e);
                }
            }
        }

        synchronized long resumedAt() {
            return resumedAt;
        }

        void stop() {
            reader.interrupt();
        }
    }

    // ------------------------------------------------------------------ the destination

    /**
     * Receives a file by post-copy: reads its description, has {@code build} create it, gives
     * it the layout, binds the owner, imports the carried states and returns at once, the
     * pages still arriving. Await {@link Arrival#restore()}; its failure says the channel broke
     * (the source kept the guest). On a failure before it returns, the file is closed.
     *
     * @param timeout the longest a page may take to arrive before the restore fails
     * @throws GuestMemoryException {@code EBADMSG} for a message that does not open or does not
     *                              read; {@code EINVAL} for a null argument, a file of another
     *                              size, carried kinds that differ from the description's, or a
     *                              state its object refuses
     * @throws IOException          when the channel fails
     */
    public static Arrival receive(InputStream from, OutputStream to, SecretKey key,
                                  Function<FileDescription, MemoryMigration.Destination> build, Duration timeout)
            throws IOException {
        if (from == null || to == null || key == null || build == null || timeout == null) {
            throw new GuestMemoryException(Errno.EINVAL, "postCopy", "an argument is null", -1);
        }
        PostCopyFrames frames = new PostCopyFrames(key, false, from, to, "the source");
        FileDescription description = describe(frames);
        MemoryMigration.Destination destination = build.apply(description);
        GuestMemory memory = destination.memory();
        try {
            return land(frames, description, memory, () -> List.of(memory.bind(destination.owner(), 0, memory.size())),
                    destination.carried(), timeout);
        } catch (IOException | RuntimeException e) {
            memory.close();
            throw e;
        }
    }

    /**
     * Receives a file by post-copy into a target whose owners are bound already (a VM's
     * memslots over a file it built from the description); otherwise as
     * {@link #receive(InputStream, OutputStream, SecretKey, Function, Duration)}. On a failure
     * after {@code build} ran, the restore is closed and the target's file stays the caller's to
     * close.
     *
     * @throws GuestMemoryException {@code EINVAL} also for bindings that do not cover one file once
     */
    public static Arrival receiveInto(InputStream from, OutputStream to, SecretKey key,
                                      Function<FileDescription, Target> build, Duration timeout) throws IOException {
        if (from == null || to == null || key == null || build == null || timeout == null) {
            throw new GuestMemoryException(Errno.EINVAL, "postCopy", "an argument is null", -1);
        }
        PostCopyFrames frames = new PostCopyFrames(key, false, from, to, "the source");
        FileDescription description = describe(frames);
        Target target = build.apply(description);
        List<Binding> bindings = cover(target.bindings());
        return land(frames, description, bindings.getFirst().memory(), () -> bindings, target.carried(), timeout);
    }

    private static FileDescription describe(PostCopyFrames frames) throws IOException {
        PostCopyFrames.Frame describe = frames.receive();
        if (describe.type() != PostCopyFrames.DESCRIBE) {
            throw frames.bad("message of type " + describe.type() + " instead of DESCRIBE");
        }
        FileDescription description = FileDescription.decode(rest(describe.payload()));
        // The lazy restore's native calls link on their own thread while the source still runs.
        LazyRestore.prepare();
        return description;
    }

    /**
     * The destination's side after the description: READY, the layout, the lazy restore into
     * the owners {@code bind} gives, the poisoned pages, the carried states, RESUMED. Closes
     * the restore on failure.
     */
    private static Arrival land(PostCopyFrames frames, FileDescription description, GuestMemory memory,
                                java.util.function.Supplier<List<Binding>> bind, List<CarriedState> carried, Duration timeout)
            throws IOException {
        LazyRestore restore = null;
        try {
            if (memory.size() != description.size()) {
                throw new GuestMemoryException(Errno.EINVAL, "postCopy", "the destination's file has " + memory.size()
                        + " bytes, the description " + description.size(), -1);
            }
            List<String> kinds = carried.stream().map(CarriedState::kind).toList();
            if (!kinds.equals(description.carried())) {
                throw new GuestMemoryException(Errno.EINVAL, "postCopy", "the source carries " + description.carried()
                        + ", the destination takes " + kinds, -1);
            }
            // The owner binds the empty file before READY, while the source still runs: the
            // binding maps the owner's view and the owner reads the attributes (tens of ms at
            // 1 GiB), none of which depends on the layout, so none of it falls in the pause.
            List<Binding> bindings = bind.get();
            frames.send(PostCopyFrames.READY, new byte[0]);
            PostCopyFrames.Frame layoutFrame = frames.receive();
            if (layoutFrame.type() != PostCopyFrames.LAYOUT) {
                throw frames.bad("message of type " + layoutFrame.type() + " instead of LAYOUT");
            }
            Layout layout = Layout.decode(layoutFrame.payload(), memory.size(), kinds.size(), frames);
            RemotePageSource pages = new RemotePageSource(frames, memory.size(), layout.runs, timeout);
            restore = LazyRestore.start(bindings, pages, state -> { });
            for (long offset : layout.poisoned) {
                // a failed page keeps memory (zero here, as none travels) and its mark
                memory.allocate(offset, PAGE);
                memory.reportMemoryFailure(offset);
            }
            for (int i = 0; i < kinds.size(); i++) {
                try {
                    carried.get(i).importState(layout.states.get(i));
                } catch (IllegalArgumentException refused) {
                    throw new GuestMemoryException(Errno.EINVAL, "postCopy", kinds.get(i) + " refused its state: "
                            + refused.getMessage(), -1);
                }
            }
            long resumedAt = System.nanoTime();
            synchronized (frames) {
                frames.send(PostCopyFrames.RESUMED, ByteBuffer.allocate(8).putLong(resumedAt).array());
            }
            return new Arrival(bindings, carried, restore, layout.pausedAt, resumedAt, layout.runs);
        } catch (IOException | RuntimeException e) {
            if (restore != null) {
                restore.close();
            }
            throw e;
        }
    }

    private static byte[] rest(ByteBuffer in) {
        byte[] bytes = new byte[in.remaining()];
        in.get(bytes);
        return bytes;
    }

    /** The LAYOUT message, read and checked: runs ascending, page aligned, inside the file. */
    private record Layout(long pausedAt, List<PageRun> runs, List<Long> poisoned, List<byte[]> states) {
        static Layout decode(ByteBuffer in, long size, int carried, PostCopyFrames frames) {
            try {
                long pausedAt = in.getLong();
                int count = in.getInt();
                if (count < 0 || count > size / PAGE) {
                    throw frames.bad("a layout of " + count + " runs");
                }
                List<PageRun> runs = new ArrayList<>(count);
                long end = 0;
                for (int i = 0; i < count; i++) {
                    long offset = in.getLong();
                    long length = in.getLong();
                    int attribute = in.get();
                    int allocated = in.get();
                    if (offset < end || length <= 0 || offset % PAGE != 0 || length % PAGE != 0 || offset > size - length
                            || (attribute & ~1) != 0 || (allocated & ~1) != 0) {
                        throw frames.bad("layout run " + i + " is malformed");
                    }
                    runs.add(new PageRun(offset, length, attribute == 1 ? Attribute.PRIVATE : Attribute.SHARED, allocated == 1));
                    end = offset + length;
                }
                int failed = in.getInt();
                if (failed < 0 || failed > size / PAGE) {
                    throw frames.bad("a layout of " + failed + " poisoned pages");
                }
                List<Long> poisoned = new ArrayList<>(failed);
                for (int i = 0; i < failed; i++) {
                    long offset = in.getLong();
                    PageSource.Extent extent = offset >= 0 && offset % PAGE == 0 && offset < size
                            ? RemotePageSource.extentOf(runs, offset) : null;
                    if (extent != null || offset < 0 || offset % PAGE != 0 || offset >= size || !named(runs, offset)) {
                        throw frames.bad("poisoned page " + i + " is not a named hole");
                    }
                    poisoned.add(offset);
                }
                int states = in.getInt();
                if (states != carried) {
                    throw frames.bad("the layout carries " + states + " states, the description names " + carried);
                }
                List<byte[]> carriedStates = new ArrayList<>(states);
                for (int i = 0; i < states; i++) {
                    int length = in.getInt();
                    if (length < 0 || length > in.remaining()) {
                        throw frames.bad("carried state " + i + " is cut short");
                    }
                    byte[] state = new byte[length];
                    in.get(state);
                    carriedStates.add(state);
                }
                if (in.hasRemaining()) {
                    throw frames.bad("bytes follow the layout");
                }
                return new Layout(pausedAt, runs, poisoned, carriedStates);
            } catch (BufferUnderflowException e) {
                throw frames.bad("the layout is cut short");
            }
        }

        private static boolean named(List<PageRun> runs, long offset) {
            for (PageRun run : runs) {
                if (offset >= run.offset() && offset < run.offset() + run.length()) {
                    return true;
                }
            }
            return false;
        }
    }
}
