package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.assertj.core.api.Assertions.assertThat;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * userfaultfd against the real kernel. The faulting access in these tests is always a system
 * call ({@code pwrite} from the registered page), never Java code: a Java thread blocked in a
 * fault would hold up every safepoint of the JVM.
 */
@ExtendWith(NoLeaks.class)
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class UserfaultfdTest {
    static final long PAGE = Mman.PAGE_SIZE;

    @Test
    void requestNumbersMatchTheKernelHeaders() {
        // linux/userfaultfd.h as compiled for x86-64
        assertThat(Userfaultfd.UFFDIO_API).isEqualTo(0xc018aa3fL);
        assertThat(Userfaultfd.UFFDIO_REGISTER).isEqualTo(0xc020aa00L);
        assertThat(Userfaultfd.UFFDIO_UNREGISTER).isEqualTo(0x8010aa01L);
        assertThat(Userfaultfd.UFFDIO_WAKE).isEqualTo(0x8010aa02L);
        assertThat(Userfaultfd.UFFDIO_COPY).isEqualTo(0xc028aa03L);
        assertThat(Userfaultfd.UFFDIO_ZEROPAGE).isEqualTo(0xc020aa04L);
        assertThat(Userfaultfd.UFFDIO_POISON).isEqualTo(0xc020aa08L);
        assertThat(Userfaultfd.USERFAULTFD_IOC_NEW).isEqualTo(0xaa00L);
        assertThat(Userfaultfd.MSG.byteSize()).isEqualTo(32);
    }

    @Test
    void aFaultFromASystemCallIsServedByCopy() throws Exception {
        int file = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
        int sink = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
        try (Arena arena = Arena.ofShared(); Userfaultfd uffd = Userfaultfd.open(Userfaultfd.FEATURE_POISON)) {
            Fd.ftruncate(file, 4 * PAGE);
            MemorySegment pages = Mman.mmap(arena, 4 * PAGE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, file, 0);
            uffd.register(pages.address(), pages.byteSize());
            MemorySegment chunk = pages.asSlice(PAGE, PAGE);
            // The kernel faults on the unserved page inside pwrite and waits for us.
            CompletableFuture<Long> written = CompletableFuture.supplyAsync(() -> Fd.pwrite(sink, chunk, 0));
            long[] faults = new long[0];
            while (faults.length == 0) {
                faults = uffd.poll(100);
            }
            assertThat(faults[0] & -PAGE).isEqualTo(chunk.address());
            MemorySegment source = arena.allocate(PAGE, PAGE).fill((byte) 0x5a);
            MemorySegment args = arena.allocate(Userfaultfd.COPY);
            assertThat(uffd.copy(args, chunk.address(), source.address(), PAGE)).isEqualTo(PAGE);
            assertThat(written.get(30, TimeUnit.SECONDS)).isEqualTo(PAGE);
            MemorySegment back = arena.allocate(PAGE);
            Fd.pread(sink, back, 0);
            assertThat(back.mismatch(source)).isEqualTo(-1);
            // A page already there: EEXIST, and the zero page the same.
            assertThat(uffd.copy(args, chunk.address(), source.address(), PAGE)).isEqualTo(-Errno.EEXIST.number());
            MemorySegment zeroArgs = arena.allocate(Userfaultfd.ZEROPAGE);
            assertThat(uffd.zeroPage(zeroArgs, chunk.address(), PAGE)).isEqualTo(-Errno.EEXIST.number());
            assertThat(uffd.zeroPage(zeroArgs, chunk.address() + PAGE, PAGE)).isEqualTo(PAGE);
            assertThat(pages.get(JAVA_BYTE, 2 * PAGE)).isZero();  // served: Java may touch it now
            uffd.wake(pages.address(), pages.byteSize());
            uffd.unregister(pages.address(), pages.byteSize());
        } finally {
            Fd.close(file);
            Fd.close(sink);
        }
    }

    @Test
    void aPoisonedPageFailsTheSystemCallInsteadOfWaiting() throws Exception {
        int file = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
        int sink = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
        try (Arena arena = Arena.ofShared(); Userfaultfd uffd = Userfaultfd.open(Userfaultfd.FEATURE_POISON)) {
            Fd.ftruncate(file, 2 * PAGE);
            MemorySegment pages = Mman.mmap(arena, 2 * PAGE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, file, 0);
            uffd.register(pages.address(), pages.byteSize());
            if ((uffd.features() & Userfaultfd.FEATURE_POISON) == 0) {
                return;  // an older kernel: nothing to check
            }
            assertThat(uffd.poison(arena.allocate(Userfaultfd.ZEROPAGE), pages.address(), PAGE)).isEqualTo(PAGE);
            CompletableFuture<Object> written = CompletableFuture.supplyAsync(() -> {
                try {
                    return Fd.pwrite(sink, pages.asSlice(0, PAGE), 0);
                } catch (LinuxException e) {
                    return e;
                }
            });
            assertThat(written.get(30, TimeUnit.SECONDS)).isInstanceOf(LinuxException.class);
        } finally {
            Fd.close(file);
            Fd.close(sink);
        }
    }

    /**
     * A call that races the close never reaches the descriptor's number after it is closed (the
     * process may have given the number to another file by then): it ends first, or finds the
     * descriptor closed. A file opened right after the close takes the number back; calls on the
     * closed object then answer EBADF and leave that file alone.
     */
    @Test
    @Timeout(30)
    void callsAfterOrDuringCloseAnswerEbadfAndNeverReachAReusedNumber() throws Exception {
        for (int round = 0; round < 20; round++) {
            Userfaultfd uffd = Userfaultfd.open(Userfaultfd.FEATURE_POISON);
            CompletableFuture<Object> poller = CompletableFuture.supplyAsync(() -> {
                try {
                    for (int i = 0; i < 1_000; i++) {
                        uffd.poll(1);
                    }
                    return "polled";
                } catch (LinuxException e) {
                    return e;
                }
            });
            Thread.sleep(round % 3);
            uffd.close();
            Object outcome = poller.get(20, TimeUnit.SECONDS);
            if (outcome instanceof LinuxException e) {
                assertThat(e.errno()).isEqualTo(Errno.EBADF.number());
            }
            int reused = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
            try (Arena arena = Arena.ofConfined()) {
                // Most often the same number (the lowest free one); another thread of this JVM
                // may take it first, which changes nothing below.
                assertThat(reused).isGreaterThanOrEqualTo(0);
                assertThat(uffd.copy(arena.allocate(Userfaultfd.COPY), 0, 0, 4096)).isEqualTo(-Errno.EBADF.number());
                assertThat(uffd.zeroPage(arena.allocate(Userfaultfd.ZEROPAGE), 0, 4096)).isEqualTo(-Errno.EBADF.number());
                assertThat(org.assertj.core.api.Assertions.catchThrowableOfType(LinuxException.class, () -> uffd.poll(0)).errno())
                        .isEqualTo(Errno.EBADF.number());
                assertThat(org.assertj.core.api.Assertions.catchThrowableOfType(LinuxException.class, () -> uffd.wake(0, 4096))
                        .errno()).isEqualTo(Errno.EBADF.number());
            } finally {
                Fd.close(reused);
            }
        }
    }
}
