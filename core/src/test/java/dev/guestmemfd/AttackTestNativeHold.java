package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assumptions.assumeThat;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Attacks with segments that a native call holds while the library revokes them: a blocking
 * {@code read(2)} from a pipe into a lease's or pin's segment, and the data written only after
 * the pages became private, punched, poisoned or the file closed. The file's pages must never
 * receive those bytes.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
@SuppressWarnings("restricted") // downcalls to libc's pipe, read, write, close
class AttackTestNativeHold {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final long HUGE = 2L << 20;
    private static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
    private static final Linker LINKER = Linker.nativeLinker();
    private static final MethodHandle PIPE = LINKER.downcallHandle(LINKER.defaultLookup().find("pipe").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
    private static final MethodHandle READ = LINKER.downcallHandle(LINKER.defaultLookup().find("read").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG));
    private static final MethodHandle WRITE = LINKER.downcallHandle(LINKER.defaultLookup().find("write").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG));
    private static final MethodHandle CLOSE = LINKER.downcallHandle(LINKER.defaultLookup().find("close").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));

    /** A pipe; [0] read end, [1] write end. */
    private static int[] pipe() throws Throwable {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment fds = a.allocate(ValueLayout.JAVA_INT, 2);
            assertThat((int) PIPE.invokeExact(fds)).isZero();
            return new int[] {fds.getAtIndex(ValueLayout.JAVA_INT, 0), fds.getAtIndex(ValueLayout.JAVA_INT, 1)};
        }
    }

    private static void closeFd(int fd) throws Throwable {
        int ignored = (int) CLOSE.invokeExact(fd);
        assertThat(ignored).isZero();
    }

    /** Starts a read(2) of {@code length} bytes into {@code into} that blocks until the pipe is written. */
    private static CompletableFuture<Long> blockingRead(int fd, MemorySegment into, long length) {
        return CompletableFuture.supplyAsync(() -> {
            try {
                long total = 0;
                while (total < length) {
                    long n = (long) READ.invokeExact(fd, into.asSlice(total), length - total);
                    if (n <= 0) {
                        return n;
                    }
                    total += n;
                }
                return total;
            } catch (Throwable e) {
                throw new RuntimeException(e);
            }
        });
    }

    private static void writeAll(int fd, byte value, long length) throws Throwable {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment data = a.allocate(length);
            data.fill(value);
            long done = 0;
            while (done < length) {
                long n = (long) WRITE.invokeExact(fd, data.asSlice(done), length - done);
                assertThat(n).isPositive();
                done += n;
            }
        }
    }

    /** Waits until the reader is inside read(2): nothing to observe, so give it time to block. */
    private static void letItBlock() throws InterruptedException {
        Thread.sleep(150);
    }

    private void attack(Backing backing, long size, long at, long length, boolean viaPin,
            Function<GuestMemory, Runnable> revocation, boolean checkPrivateBytes) throws Throwable {
        assumeThat(backing.isAvailable()).isTrue();
        int[] fds = pipe();
        try (GuestMemory m = GuestMemory.create(size, FLAGS, backing);
                Binding owner = m.bind(new Owner() { }, 0, size);
                HostMapping map = m.map(0, size)) {
            byte[] before = new byte[(int) size];
            Arrays.fill(before, (byte) 0xAA);
            map.write(0, before);
            Lease lease = viaPin ? null : map.lease(at, length);
            Pin pin = viaPin ? m.pin(at, length) : null;
            MemorySegment held = viaPin ? pin.segment() : lease.segment();
            m.pinWait(Duration.ofMillis(5));
            CompletableFuture<Long> reader = blockingRead(fds[0], held, length);
            letItBlock();
            if (viaPin) {
                pin.close(); // never refused, also while a native call holds the segment
            }
            revocation.apply(m).run();
            writeAll(fds[1], (byte) 0x55, length);
            assertThat(reader.get(20, TimeUnit.SECONDS)).isEqualTo(length);
            if (lease != null) {
                lease.close();
            }
            if (!m.isClosed() && checkPrivateBytes) {
                byte[] got = owner.pages().asSlice(at, length).toArray(ValueLayout.JAVA_BYTE);
                assertThat(got).as("the held segment wrote through into the file").doesNotContain((byte) 0x55);
            }
        } finally {
            closeFd(fds[0]);
            closeFd(fds[1]);
        }
    }

    @Test
    void aLeaseHeldByReadCannotWriteIntoPagesConvertedToPrivate() throws Throwable {
        attack(Backing.MEMFD, 16 * PAGE, 4 * PAGE, 2 * PAGE, false,
                m -> () -> m.convert(4 * PAGE, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE), true);
    }

    @Test
    void aPinClosedWhileHeldByReadCannotWriteIntoPagesConvertedToPrivate() throws Throwable {
        attack(Backing.MEMFD, 16 * PAGE, 4 * PAGE, 2 * PAGE, true,
                m -> () -> m.convert(0, 16 * PAGE, Attribute.PRIVATE, Content.PRESERVE), true);
    }

    @Test
    void aHugetlbLeaseAcrossTheBoundaryHeldByReadCannotWriteIntoPrivatePages() throws Throwable {
        attack(Backing.HUGETLB_2M, 2 * HUGE, HUGE - PAGE, 2 * PAGE, false,
                m -> () -> m.convert(HUGE - PAGE, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE), true);
    }

    @Test
    void aHugetlbPinHeldByReadCannotWriteIntoPrivatePages() throws Throwable {
        attack(Backing.HUGETLB_2M, HUGE, 8 * PAGE, PAGE, true,
                m -> () -> m.convert(8 * PAGE, PAGE, Attribute.PRIVATE, Content.PRESERVE), true);
    }

    @Test
    void aLeaseHeldByReadCannotWriteIntoAPoisonedPage() throws Throwable {
        assumeThat(true).isTrue();
        int[] fds = pipe();
        try (GuestMemory m = GuestMemory.create(16 * PAGE, FLAGS, Backing.MEMFD);
                Binding owner = m.bind(new Owner() { }, 0, 16 * PAGE);
                HostMapping map = m.map(0, m.size())) {
            byte[] fill = new byte[(int) m.size()];
            Arrays.fill(fill, (byte) 0xAA);
            map.write(0, fill);
            Lease lease = map.lease(3 * PAGE, PAGE);
            CompletableFuture<Long> reader = blockingRead(fds[0], lease.segment(), PAGE);
            letItBlock();
            assertThat(m.reportMemoryFailure(3 * PAGE)).isTrue();
            writeAll(fds[1], (byte) 0x55, PAGE);
            assertThat(reader.get(20, TimeUnit.SECONDS)).isEqualTo(PAGE);
            lease.close();
            assertThat(owner.pages().get(ValueLayout.JAVA_BYTE, 3 * PAGE)).isEqualTo((byte) 0xAA);
            m.punchHole(3 * PAGE, PAGE);
            assertThat(map.read(3 * PAGE, (int) PAGE)).containsOnly(0);
        } finally {
            closeFd(fds[0]);
            closeFd(fds[1]);
        }
    }

    @Test
    void closingTheFileUnderAHeldSegmentNeitherCrashesNorHangs() throws Throwable {
        int[] fds = pipe();
        try {
            GuestMemory m = GuestMemory.create(16 * PAGE, FLAGS, Backing.MEMFD);
            HostMapping map = m.map(0, m.size());
            Lease lease = map.lease(0, 2 * PAGE);
            CompletableFuture<Long> reader = blockingRead(fds[0], lease.segment(), 2 * PAGE);
            letItBlock();
            m.close();
            assertThat(m.isClosed()).isTrue();
            writeAll(fds[1], (byte) 0x55, 2 * PAGE);
            assertThat(reader.get(20, TimeUnit.SECONDS)).isEqualTo(2 * PAGE);
            assertThatThrownBy(() -> map.read(0, 1)).isInstanceOfSatisfying(GuestMemoryException.class,
                    e -> assertThat(e.errno()).isIn(Errno.EBADF, Errno.EFAULT));
            lease.close();
            map.close();
        } finally {
            closeFd(fds[0]);
            closeFd(fds[1]);
        }
    }

    @Test
    void closeFromAnotherThreadDuringScopedAccessWaitsOrRefusesButNeverCrashes() throws Throwable {
        for (int round = 0; round < 20; round++) {
            GuestMemory m = GuestMemory.create(64 * PAGE, FLAGS, Backing.MEMFD);
            HostMapping map = m.map(0, m.size());
            CompletableFuture<Void> closer = CompletableFuture.runAsync(m::close);
            for (int i = 0; i < 50; i++) {
                try {
                    map.access(0, m.size(), s -> s.fill((byte) 1));
                    map.read(PAGE * (i % 64), 16);
                    m.pageCounts();
                    m.poisonedPages();
                } catch (GuestMemoryException e) {
                    assertThat(e.errno()).isIn(Errno.EBADF, Errno.EFAULT);
                }
            }
            closer.get(20, TimeUnit.SECONDS);
            assertThat(m.isClosed()).isTrue();
            map.close();
        }
        assertThat(List.of()).isEmpty();
    }
}
