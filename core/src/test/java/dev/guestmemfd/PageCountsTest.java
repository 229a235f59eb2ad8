package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@link GuestMemory#pageCounts()} asks the kernel for residency, which takes time in
 * proportion to the file's size (seconds for a TiB), without holding the file's lock: a
 * conversion from another thread completes while the scan is still in progress, and a close
 * during the scan waits for it to leave before it closes the fd.
 */
class PageCountsTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    /** Big and sparse: only the mapping's address space is used. */
    static final long SIZE = 64L << 30;

    @Test
    @Timeout(60)
    void aConversionCompletesWhilePageCountsScansABigSparseFile() throws Exception {
        try (GuestMemory m = GuestMemory.create(SIZE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD)) {
            m.allocate(0, 4 * PAGE);
            AtomicReference<String> duringScan = new AtomicReference<>("the hook did not run");
            m.beforeResidencyScan = () -> {
                // pageCounts is between its snapshot and its scan here; with the lock held, this would time out.
                CompletableFuture<Void> convert = CompletableFuture.runAsync(
                        () -> m.convert(SIZE - PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED));
                try {
                    convert.get(10, TimeUnit.SECONDS);
                    duringScan.set("converted");
                } catch (Exception e) {
                    duringScan.set("the conversion did not complete during the scan: " + e);
                }
            };
            PageCounts counts = m.pageCounts();
            m.beforeResidencyScan = null;
            assertThat(duringScan.get()).isEqualTo("converted");
            assertThat(counts.pages()).isEqualTo(SIZE / PAGE);
            assertThat(counts.allocated()).isEqualTo(4);
            assertThat(counts.privates()).as("attributes of the instant before the scan").isZero();
            assertThat(m.pageCounts().privates()).isEqualTo(1);
        }
    }

    @Test
    @Timeout(60)
    void aCloseDuringTheScanWaitsForItAndTheScanFailsWithEbadf() throws Exception {
        GuestMemory m = GuestMemory.create(SIZE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
        AtomicReference<Thread> closer = new AtomicReference<>();
        CompletableFuture<Void> closed = new CompletableFuture<>();
        AtomicReference<String> duringScan = new AtomicReference<>("the hook did not run");
        m.beforeResidencyScan = () -> {
            closer.set(Thread.ofPlatform().start(() -> {
                m.close();
                closed.complete(null);
            }));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (closer.get().getState() != Thread.State.WAITING && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            duringScan.set(closed.isDone() ? "close() returned while the scan still used the file" : "close() waits");
        };
        Errors.assertErrno(m::pageCounts, "EBADF");
        closed.get(10, TimeUnit.SECONDS);
        assertThat(duringScan.get()).isEqualTo("close() waits");
        assertThat(m.isClosed()).isTrue();
    }
}
