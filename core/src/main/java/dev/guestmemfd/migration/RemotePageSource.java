package dev.guestmemfd.migration;

import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.PageRun;
import dev.guestmemfd.PageSource;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The pages of a post-copy migration as a {@link PageSource}: the layout came with the
 * source's last message before the destination resumed; the bytes of each extent are asked
 * for over the channel when a fault, a library access or the background pull first needs
 * them, and the extents after it are asked for ahead (the pull reads in ascending order), so
 * the channel stays busy. Each extent is asked for once and arrives once.
 *
 * <p>When the channel breaks, every read waiting or to come fails with {@code EIO}: the lazy
 * restore then fails, the pages not yet moved are poisoned, and no access waits on for ever.
 * {@link #verify} is the two sides' confirmation: it tells the source every page arrived and
 * returns once the source answered that it released its copy.
 *
 * @implSpec Thread safe: the fault server and the pull read at once; one thread of its own
 * reads the channel.
 */
final class RemotePageSource implements PageSource {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    /** The most one message brings: 16 pages, aligned in the file. */
    static final long EXTENT = 64 * 1024;
    /** Extents asked for ahead of the one a read needs. */
    private static final int AHEAD = 64;
    /** Extents kept after they were read, for a second read racing the first over one extent. */
    private static final int KEEP = 256;

    /** Flags of a request: a fault or library access waits for it; the extent was received before. */
    static final int URGENT = 1;
    static final int AGAIN = 2;

    private final PostCopyFrames frames;
    private final long fileSize;
    private final List<PageRun> layout;
    private final Duration timeout;
    private final ConcurrentHashMap<Long, CompletableFuture<byte[]>> extents = new ConcurrentHashMap<>();
    private final BitSet asked = new BitSet();  // by extent index; guarded by itself
    private final ArrayDeque<Long> taken = new ArrayDeque<>();  // guarded by itself
    private final CompletableFuture<Void> released = new CompletableFuture<>();
    private final AtomicLong bytesReceived = new AtomicLong();
    private final AtomicLong requests = new AtomicLong();
    private final Thread reader;
    private volatile IOException broken;
    private volatile boolean closed;

    RemotePageSource(PostCopyFrames frames, long fileSize, List<PageRun> layout, Duration timeout) {
        this.frames = frames;
        this.fileSize = fileSize;
        this.layout = List.copyOf(layout);
        this.timeout = timeout;
        this.reader = Thread.ofPlatform().daemon().name("gmem-postcopy-in").start(this::readChannel);
    }

    /** {@return the extent around {@code offset} in {@code layout}: its 64 KiB block clipped to its allocated run, or null} */
    static Extent extentOf(List<PageRun> layout, long offset) {
        int lo = 0;
        int hi = layout.size() - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            PageRun run = layout.get(mid);
            if (offset < run.offset()) {
                hi = mid - 1;
            } else if (offset >= run.offset() + run.length()) {
                lo = mid + 1;
            } else {
                if (!run.allocated()) {
                    return null;
                }
                long block = offset - offset % EXTENT;
                long start = Math.max(block, run.offset());
                long end = Math.min(block + EXTENT, run.offset() + run.length());
                return new Extent(start, end - start);
            }
        }
        return null;
    }

    @Override
    public long fileSize() {
        return fileSize;
    }

    @Override
    public List<PageRun> layout() {
        return layout;
    }

    @Override
    public List<byte[]> ownerStates() {
        return List.of();  // the carried states came with the layout and were imported already
    }

    @Override
    public Extent extent(long offset) {
        return extentOf(layout, offset);
    }

    @Override
    public void read(Extent extent, MemorySegment into) throws IOException {
        Extent expected = extent(extent.offset());
        if (!extent.equals(expected)) {
            throw new GuestMemoryException(Errno.EINVAL, "postCopy", "no extent " + extent + " in the layout", extent.offset());
        }
        CompletableFuture<byte[]> arriving = ask(extent, true);
        for (long next = extent.offset() + extent.length(), n = 0; n < AHEAD && next < fileSize; n++) {
            Extent ahead = nextExtent(next);
            if (ahead == null) {
                break;
            }
            ask(ahead, false);
            next = ahead.offset() + ahead.length();
        }
        byte[] bytes;
        try {
            bytes = arriving.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof IOException io ? io : new IOException(e.getCause());
        } catch (TimeoutException e) {
            throw lost("the page at offset " + extent.offset() + " did not arrive within " + timeout, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while waiting for the page at offset " + extent.offset(), e);
        }
        MemorySegment.copy(bytes, 0, into, ValueLayout.JAVA_BYTE, 0, bytes.length);
        release(extent.offset());
    }

    /** {@return the first allocated extent at or after {@code offset}, or null} */
    private Extent nextExtent(long offset) {
        int lo = 0;
        int hi = layout.size();
        while (lo < hi) {  // the first run ending after offset
            int mid = (lo + hi) >>> 1;
            PageRun run = layout.get(mid);
            if (run.offset() + run.length() <= offset) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for (int i = lo; i < layout.size(); i++) {
            PageRun run = layout.get(i);
            if (run.allocated()) {
                return extentOf(layout, Math.max(offset, run.offset()));
            }
        }
        return null;
    }

    /** {@return the extent's bytes to come; asks the source for them the first time only} */
    private CompletableFuture<byte[]> ask(Extent extent, boolean urgent) throws IOException {
        IOException failed = broken;
        if (failed != null) {
            throw failed;
        }
        int index = Math.toIntExact(extent.offset() / PAGE);
        CompletableFuture<byte[]> arriving;
        boolean again;
        synchronized (asked) {
            arriving = extents.get(extent.offset());
            if (arriving != null) {
                return arriving;
            }
            // An extent read once and let go is asked for again (flagged so): two threads that
            // claimed parts of it at once can read it far apart in time. Rare; the source counts it.
            again = asked.get(index);
            asked.set(index);
            arriving = new CompletableFuture<>();
            extents.put(extent.offset(), arriving);
        }
        ByteBuffer request = ByteBuffer.allocate(13).putLong(extent.offset()).putInt((int) extent.length())
                .put((byte) ((urgent ? URGENT : 0) | (again ? AGAIN : 0)));
        try {
            synchronized (frames) {
                frames.send(PostCopyFrames.REQUEST, request.array());
            }
        } catch (IOException e) {
            IOException lost = lost("asking for the page at offset " + extent.offset() + " failed: " + e.getMessage(), e);
            breakOff(lost);
            throw lost;
        }
        requests.incrementAndGet();
        return arriving;
    }

    /** Keeps the last {@code KEEP} extents read, zeroing the bytes of older ones. */
    private void release(long offset) {
        Long evicted = null;
        synchronized (taken) {
            taken.addLast(offset);
            if (taken.size() > KEEP) {
                evicted = taken.removeFirst();
            }
        }
        if (evicted != null) {
            CompletableFuture<byte[]> old = extents.remove(evicted);
            if (old != null) {
                Arrays.fill(old.join(), (byte) 0);
            }
        }
    }

    /** The channel's reader: page messages complete their extents; the release ends it. */
    private void readChannel() {
        try {
            while (true) {
                PostCopyFrames.Frame frame = frames.receive();
                ByteBuffer in = frame.payload();
                if (frame.type() == PostCopyFrames.PAGES) {
                    long offset = in.getLong();
                    int length = in.getInt();
                    CompletableFuture<byte[]> arriving = extents.get(offset);
                    Extent extent = extentOf(layout, offset);
                    if (arriving == null || arriving.isDone() || extent == null || extent.offset() != offset
                            || extent.length() != length || in.remaining() != length) {
                        throw frames.bad("pages at offset " + offset + " that were not asked for, or of the wrong length");
                    }
                    byte[] bytes = new byte[length];
                    in.get(bytes);
                    Arrays.fill(in.array(), (byte) 0);
                    bytesReceived.addAndGet(length);
                    arriving.complete(bytes);
                } else if (frame.type() == PostCopyFrames.RELEASED && !in.hasRemaining()) {
                    released.complete(null);
                    return;
                } else {
                    throw frames.bad("message of type " + frame.type() + " during post-copy");
                }
            }
        } catch (GuestMemoryException e) {
            breakOff(new IOException("post-copy: " + e.getMessage(), e));
        } catch (IOException | RuntimeException e) {
            breakOff(lost("the channel to the source broke: " + e, e));
        }
    }

    private static IOException lost(String why, Throwable cause) {
        return new IOException("post-copy: " + why + "; the source still holds every page and may resume", cause);
    }

    /** Fails every read waiting and to come. */
    private void breakOff(IOException cause) {
        synchronized (asked) {
            if (broken == null) {
                broken = closed ? new IOException("post-copy: the source was closed", cause) : cause;
            }
        }
        for (CompletableFuture<byte[]> f : extents.values()) {
            f.completeExceptionally(broken);
        }
        released.completeExceptionally(broken);
    }

    /** {@return the page bytes received so far} */
    long bytesReceived() {
        return bytesReceived.get();
    }

    /** {@return the extents asked for so far} */
    long requests() {
        return requests.get();
    }

    /**
     * Tells the source every page is in, and waits for it to say it released its copy: from
     * then on the destination's file is the only one.
     */
    @Override
    public void verify() throws IOException {
        IOException failed = broken;
        if (failed != null) {
            throw failed;
        }
        try {
            synchronized (frames) {
                frames.send(PostCopyFrames.RESIDENT, ByteBuffer.allocate(8).putLong(bytesReceived.get()).array());
            }
            released.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof IOException io ? io : new IOException(e.getCause());
        } catch (TimeoutException e) {
            throw lost("the source did not confirm the release within " + timeout, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while waiting for the source's release", e);
        }
    }

    /** Stops waiting for the source: reads after it fail. The channel itself is the caller's. */
    @Override
    public void close() {
        closed = true;
        breakOff(new IOException("post-copy: the page source was closed"));
        reader.interrupt();
    }

    /** Waits a moment for the channel's reader to end, once the channel is closed. */
    void awaitReader(Duration wait) throws InterruptedException {
        reader.join(wait);
    }
}
