package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.LazyRestore;
import dev.guestmemfd.Owner;
import dev.guestmemfd.PageRun;
import dev.guestmemfd.PageSource;
import dev.guestmemfd.Snapshot;
import java.io.BufferedInputStream;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import javax.crypto.SecretKey;

/**
 * {@code gmem restore --lazy}: the memory of a snapshot file restored eagerly, then lazily, in
 * one run, on files of its size on the backing asked for (memfd, or huge pages, which the lazy
 * restore fetches a whole huge page at a time), with the times that compare them. The eager
 * restore goes first, so both read the snapshot from the page cache.
 */
final class LazyRestoreRun {
    private LazyRestoreRun() {
    }

    /** @param noGuest why no guest runs: the file holds memory alone, or there is no KVM */
    static int run(Path file, SecretKey key, int touch, boolean json, Backing backing, String noGuest) throws Exception {
        if (touch < 0) {
            throw Failure.usage("--touch " + touch + ": a count is 0 or more");
        }
        Map<String, Object> out = new LinkedHashMap<>();
        long size;
        long eagerNanos;
        try (PageSource probe = PageSource.open(file, key, new Snapshot.ReplayGuard())) {
            size = probe.fileSize();
        } catch (GuestMemoryException e) {
            throw new Failure(e.errno(), "snapshot file " + file + ": " + e.getMessage());
        }
        try (GuestMemory memory = create(size, backing)) {
            Binding owner = memory.bind(new Owner() { }, 0, size);
            long start = System.nanoTime();
            try (InputStream in = new BufferedInputStream(Files.newInputStream(file), 1 << 16)) {
                Snapshot.reader(key, in, new Snapshot.ReplayGuard()).restore(List.of(owner), state -> { });
            } catch (GuestMemoryException e) {
                throw new Failure(e.errno(), "snapshot file " + file + ": " + e.getMessage());
            }
            eagerNanos = System.nanoTime() - start;
        }
        try (GuestMemory memory = create(size, backing)) {
            Binding owner = memory.bind(new Owner() { }, 0, size);
            long start = System.nanoTime();
            PageSource source;
            LazyRestore restore;
            long indexed;
            try {
                // As a VMM that restores lazily would: the linking of userfaultfd's calls runs
                // on its own thread while the index is read (counted: the clock already runs).
                LazyRestore.prepare();
                source = PageSource.open(file, key, new Snapshot.ReplayGuard());
                indexed = System.nanoTime() - start;
                restore = LazyRestore.start(List.of(owner), source, state -> { });
            } catch (GuestMemoryException e) {
                throw new Failure(e.errno(), "snapshot file " + file + ": " + e.getMessage());
            }
            long started = System.nanoTime() - start;
            try (restore) {
                List<PageRun> withBytes = new ArrayList<>();
                for (PageRun run : source.layout()) {
                    if (run.allocated()) {
                        withBytes.add(run);
                    }
                }
                // The first access: the workload's first page, read by its owner.
                long firstAccess;
                if (withBytes.isEmpty()) {
                    firstAccess = started;
                } else {
                    restore.fetch(withBytes.getFirst().offset(), GuestMemory.PAGE_SIZE);
                    firstAccess = System.nanoTime() - start;
                }
                Random random = new Random(17);
                long pages = size / GuestMemory.PAGE_SIZE;
                for (int i = 0; i < touch && !withBytes.isEmpty(); i++) {
                    restore.fetch(random.nextLong(pages) * GuestMemory.PAGE_SIZE, GuestMemory.PAGE_SIZE);
                }
                if (!restore.await(Duration.ofMinutes(10))) {
                    throw new Failure(dev.guestmemfd.Errno.ETIMEDOUT, "lazy restore of " + file + " did not complete in 10 minutes");
                }
                long complete = System.nanoTime() - start;
                LazyRestore.Stats stats = restore.stats();
                out.put("file", file.toString());
                out.put("backing", GuestOptions.name(backing));
                out.put("guest", false);
                out.put("guestReason", noGuest);
                out.put("memoryBytes", size);
                out.put("allocatedBytes", stats.pagesFetched() * GuestMemory.PAGE_SIZE);
                out.put("lazy", restore.eagerReason().isEmpty());
                restore.eagerReason().ifPresent(reason -> out.put("eagerReason", reason));
                out.put("indexMs", indexed / 1e6);
                out.put("readyMs", started / 1e6);
                out.put("firstAccessMs", firstAccess / 1e6);
                out.put("residentMs", (stats.residentNanos() + started - stats.firstAccessNanos()) / 1e6);
                out.put("completeMs", complete / 1e6);
                out.put("eagerMs", eagerNanos / 1e6);
                out.put("firstAccessOfEager", eagerNanos == 0 ? 0 : (double) firstAccess / eagerNanos);
                out.put("faults", stats.faults() + stats.hostFetches());
                out.put("faultP50Us", stats.faultP50Us());
                out.put("faultP99Us", stats.faultP99Us());
                out.put("pulled", stats.pulled());
            } catch (GuestMemoryException e) {
                throw new Failure(e.errno(), "lazy restore of " + file + ": " + e.getMessage());
            }
        }
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "%s: %,d bytes of memory, %,d with data, restored on %s%n", file, out.get("memoryBytes"),
                    out.get("allocatedBytes"), out.get("backing"));
            System.out.printf(Locale.ROOT, "eager restore %.1f ms; lazy: first access after %.2f ms (%.2f %% of eager),"
                            + " all resident after %.1f ms, checked after %.1f ms%n", out.get("eagerMs"), out.get("firstAccessMs"),
                    100 * (double) out.get("firstAccessOfEager"), out.get("residentMs"), out.get("completeMs"));
            System.out.printf(Locale.ROOT, "%d pages fetched on demand: p50 %.0f us, p99 %.0f us%n", out.get("faults"),
                    out.get("faultP50Us"), out.get("faultP99Us"));
            if (out.containsKey("eagerReason")) {
                System.out.println("restored eagerly: " + out.get("eagerReason"));
            }
            System.out.println("memory only (" + noGuest + ")");
        }
        return 0;
    }

    /**
     * {@code gmem restore --lazy -}: the memory of a snapshot arriving on {@code in} (a pipe)
     * restored lazily as it arrives. A stream is read once, so there is no eager restore beside
     * it; the times run from the first byte looked for.
     */
    static int runFromStream(InputStream in, SecretKey key, int touch, boolean json) throws Exception {
        if (touch < 0) {
            throw Failure.usage("--touch " + touch + ": a count is 0 or more");
        }
        Map<String, Object> out = new LinkedHashMap<>();
        long start = System.nanoTime();
        PageSource source;
        try {
            source = PageSource.open(new BufferedInputStream(in, 1 << 16), key, new Snapshot.ReplayGuard(), Duration.ofSeconds(30));
        } catch (GuestMemoryException e) {
            throw new Failure(e.errno(), "snapshot on standard input: " + e.getMessage());
        }
        long opened = System.nanoTime() - start;
        long size = source.fileSize();
        try (GuestMemory memory = create(size, Backing.MEMFD)) {
            Binding owner = memory.bind(new Owner() { }, 0, size);
            LazyRestore restore;
            try {
                restore = LazyRestore.start(List.of(owner), source, state -> { });
            } catch (GuestMemoryException e) {
                source.close();
                throw new Failure(e.errno(), "snapshot on standard input: " + e.getMessage());
            }
            long started = System.nanoTime() - start;
            try (restore) {
                List<PageRun> withBytes = new ArrayList<>();
                for (PageRun run : source.layout()) {
                    if (run.allocated()) {
                        withBytes.add(run);
                    }
                }
                long firstAccess = started;
                if (!withBytes.isEmpty()) {
                    restore.fetch(withBytes.getFirst().offset(), GuestMemory.PAGE_SIZE);
                    firstAccess = System.nanoTime() - start;
                }
                Random random = new Random(17);
                long pages = size / GuestMemory.PAGE_SIZE;
                for (int i = 0; i < touch && !withBytes.isEmpty(); i++) {
                    restore.fetch(random.nextLong(pages) * GuestMemory.PAGE_SIZE, GuestMemory.PAGE_SIZE);
                }
                if (!restore.await(Duration.ofMinutes(10))) {
                    throw new Failure(dev.guestmemfd.Errno.ETIMEDOUT, "lazy restore from standard input did not complete in 10 minutes");
                }
                long complete = System.nanoTime() - start;
                LazyRestore.Stats stats = restore.stats();
                out.put("file", "-");
                out.put("memoryBytes", size);
                out.put("allocatedBytes", stats.pagesFetched() * GuestMemory.PAGE_SIZE);
                out.put("lazy", restore.eagerReason().isEmpty());
                out.put("openMs", opened / 1e6);
                out.put("readyMs", started / 1e6);
                out.put("firstAccessMs", firstAccess / 1e6);
                out.put("residentMs", (stats.residentNanos() + started - stats.firstAccessNanos()) / 1e6);
                out.put("completeMs", complete / 1e6);
                out.put("faults", stats.faults() + stats.hostFetches());
                out.put("faultP50Us", stats.faultP50Us());
                out.put("faultP99Us", stats.faultP99Us());
                out.put("pulled", stats.pulled());
            } catch (GuestMemoryException e) {
                throw new Failure(e.errno(), "lazy restore from standard input: " + e.getMessage());
            }
        }
        if (json) {
            System.out.println(Json.write(out));
        } else {
            System.out.printf(Locale.ROOT, "standard input: %,d bytes of memory, %,d with data%n", out.get("memoryBytes"),
                    out.get("allocatedBytes"));
            System.out.printf(Locale.ROOT, "opened after %.1f ms; first access after %.2f ms, all resident after %.1f ms,"
                    + " checked after %.1f ms%n", out.get("openMs"), out.get("firstAccessMs"), out.get("residentMs"),
                    out.get("completeMs"));
        }
        return 0;
    }

    private static GuestMemory create(long size, Backing backing) {
        try {
            return GuestMemory.create(size, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), backing);
        } catch (GuestMemoryException e) {
            throw new Failure(e.errno(), "--backing " + GuestOptions.name(backing) + ": " + e.getMessage());
        }
    }

}
