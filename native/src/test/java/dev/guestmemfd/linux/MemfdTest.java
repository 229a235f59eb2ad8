package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

@ExtendWith(NoLeaks.class)
class MemfdTest {
    static final long PAGE = Mman.PAGE_SIZE;
    static final long SIZE = 16 * PAGE;
    private int fd;

    @BeforeEach
    void createFile() {
        fd = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC);
        Fd.ftruncate(fd, SIZE);
    }

    @AfterEach
    void closeFile() {
        Fd.close(fd);
    }

    static void assertErrno(ThrowingCallable call, Errno errno) {
        assertThatThrownBy(call).isInstanceOfSatisfying(LinuxException.class, e -> {
            assertThat(e.errnoName()).isEqualTo(errno.name());
            assertThat(e.errno()).isEqualTo(errno.number());
            assertThat(e.getMessage()).endsWith(": " + errno.name() + " (" + errno.number() + ")");
        });
    }

    @Test
    void fstatReportsSizeAndBlocks() {
        Stat stat = Fd.fstat(fd);
        assertThat(stat.size()).isEqualTo(SIZE);
        assertThat(stat.blockSize()).isEqualTo(PAGE);
        assertThat(stat.blocks()).isZero();
        Fd.fallocate(fd, Fd.FALLOC_FL_KEEP_SIZE, 0, 2 * PAGE);
        assertThat(Fd.fstat(fd).blocks()).isEqualTo(2 * PAGE / 512);
    }

    @Test
    void unknownMemfdFlagIsEinval() {
        assertErrno(() -> Memfd.create(NoLeaks.NAME, 0x4000_0000), Errno.EINVAL);
    }

    @Test
    void hugetlbMemfdIsCreatedButHasNoPagesToAllocate() {
        // No hugetlb pages are reserved on these machines: the file exists, allocation fails.
        int huge = Memfd.create(NoLeaks.NAME, Memfd.MFD_CLOEXEC | Memfd.MFD_HUGETLB);
        try {
            assertErrno(() -> Fd.ftruncate(huge, 4096), Errno.EINVAL);  // not a huge-page multiple
            Fd.ftruncate(huge, 2L << 20);
            assertThat(Fd.fstat(huge).blockSize()).isEqualTo(2L << 20);
        } finally {
            Fd.close(huge);
        }
    }

    @Test
    void unalignedPunchHoleIsEinvalOnlyForOffsetsOutsideThePage() {
        // shmem accepts unaligned punches (it zeroes the partial pages); the library's own rule
        // is stricter. The kernel's EINVAL here comes from a negative length.
        assertErrno(() -> Fd.fallocate(fd, Fd.FALLOC_FL_KEEP_SIZE | Fd.FALLOC_FL_PUNCH_HOLE, 0, -1), Errno.EINVAL);
        assertErrno(() -> Fd.fallocate(fd, Fd.FALLOC_FL_PUNCH_HOLE, 0, PAGE), Errno.EOPNOTSUPP);
    }

    @Test
    void fallocateModesBeyondShmemsAreEopnotsupp() {
        assertErrno(() -> Fd.fallocate(fd, Fd.FALLOC_FL_COLLAPSE_RANGE, 0, PAGE), Errno.EOPNOTSUPP);
        assertErrno(() -> Fd.fallocate(fd, Fd.FALLOC_FL_ZERO_RANGE, 0, PAGE), Errno.EOPNOTSUPP);
    }

    @Test
    void fallocateOnAClosedFdIsEbadf() {
        int closed = Memfd.create(NoLeaks.NAME, 0);
        Fd.close(closed);
        assertErrno(() -> Fd.fallocate(closed, 0, 0, PAGE), Errno.EBADF);
        assertErrno(() -> Fd.close(closed), Errno.EBADF);
        assertErrno(() -> Fd.fstat(closed), Errno.EBADF);
        assertErrno(() -> Fd.ftruncate(closed, PAGE), Errno.EBADF);
    }

    @Test
    void mmapOfAClosedFdIsEbadf() {
        int closed = Memfd.create(NoLeaks.NAME, 0);
        Fd.close(closed);
        try (Arena arena = Arena.ofConfined()) {
            assertErrno(() -> Mman.mmap(arena, PAGE, Mman.PROT_READ, Mman.MAP_SHARED, closed, 0), Errno.EBADF);
        }
    }

    @Test
    void mmapWithUnalignedOffsetIsEinval() {
        try (Arena arena = Arena.ofConfined()) {
            assertErrno(() -> Mman.mmap(arena, PAGE, Mman.PROT_READ, Mman.MAP_SHARED, fd, 1), Errno.EINVAL);
        }
    }

    @Test
    void dataWrittenThroughOneMappingIsReadThroughAnother() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment a = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            MemorySegment b = Mman.mmap(arena, 2 * PAGE, Mman.PROT_READ, Mman.MAP_SHARED, fd, 3 * PAGE);
            assertThat(a.byteSize()).isEqualTo(SIZE);
            assertThat(b.byteSize()).isEqualTo(2 * PAGE);
            a.set(JAVA_LONG, 3 * PAGE + 8, 0x1122334455667788L);
            assertThat(b.get(JAVA_LONG, 8)).isEqualTo(0x1122334455667788L);
            // and through the file itself
            MemorySegment buf = arena.allocate(8);
            assertThat(Fd.pread(fd, buf, 3 * PAGE + 8)).isEqualTo(8);
            assertThat(buf.get(JAVA_LONG, 0)).isEqualTo(0x1122334455667788L);
        }
    }

    @Test
    void punchHoleAndMadviseRemoveGiveZeroPagesBack() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            m.fill((byte) 0x5a);
            Fd.fallocate(fd, Fd.FALLOC_FL_KEEP_SIZE | Fd.FALLOC_FL_PUNCH_HOLE, PAGE, PAGE);
            assertThat(m.get(JAVA_BYTE, PAGE)).isZero();
            assertThat(m.get(JAVA_BYTE, PAGE - 1)).isEqualTo((byte) 0x5a);
            Mman.madvise(m.asSlice(4 * PAGE, PAGE), Mman.MADV_REMOVE);
            assertThat(m.get(JAVA_BYTE, 4 * PAGE + 7)).isZero();
            assertThat(m.get(JAVA_BYTE, 5 * PAGE)).isEqualTo((byte) 0x5a);
        }
    }

    @Test
    void madviseDontneedOnASharedMappingKeepsTheFilesData() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            m.set(JAVA_BYTE, 0, (byte) 7);
            Mman.madvise(m.asSlice(0, PAGE), Mman.MADV_DONTNEED);
            assertThat(m.get(JAVA_BYTE, 0)).isEqualTo((byte) 7);
            assertErrno(() -> Mman.madvise(m.asSlice(1, PAGE), Mman.MADV_DONTNEED), Errno.EINVAL);
        }
    }

    @Test
    void populateWriteAllocatesAndMincoreSeesIt() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            MemorySegment residency = arena.allocate(SIZE / PAGE);
            Mman.mincore(m, residency);
            assertThat(residency.toArray(JAVA_BYTE)).containsOnly((byte) 0);
            Mman.madvise(m.asSlice(2 * PAGE, 3 * PAGE), Mman.MADV_POPULATE_WRITE);
            Mman.mincore(m, residency);
            byte[] r = residency.toArray(JAVA_BYTE);
            assertThat(r[1] & 1).isZero();
            assertThat(r[2] & 1).isOne();
            assertThat(r[4] & 1).isOne();
            assertThat(r[5] & 1).isZero();
            assertThat(Fd.fstat(fd).blocks()).isEqualTo(3 * PAGE / 512);
        }
    }

    @Test
    void mprotectToReadOnlyAndBack() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
            Mman.mprotect(m.asSlice(0, PAGE), Mman.PROT_READ);
            assertThat(m.get(JAVA_BYTE, 0)).isZero();
            Mman.mprotect(m.asSlice(0, PAGE), Mman.PROT_READ | Mman.PROT_WRITE);
            m.set(JAVA_BYTE, 0, (byte) 1);
            assertErrno(() -> Mman.mprotect(m.asSlice(1, PAGE), Mman.PROT_READ), Errno.EINVAL);
        }
    }

    @Test
    void closingTheArenaUnmapsAndAViewDiesWithItsOwnArena() {
        Arena mapping = Arena.ofShared();
        MemorySegment m = Mman.mmap(mapping, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, fd, 0);
        assertThat(ProcSelf.mappingsOf("memfd:" + NoLeaks.NAME)).isEqualTo(1);
        Arena lease = Arena.ofShared();
        MemorySegment view = Mman.view(m, PAGE, PAGE, lease);
        view.set(JAVA_BYTE, 0, (byte) 9);
        assertThat(m.get(JAVA_BYTE, PAGE)).isEqualTo((byte) 9);
        lease.close();
        assertThatThrownBy(() -> view.get(JAVA_BYTE, 0)).isInstanceOf(IllegalStateException.class);
        assertThat(m.get(JAVA_BYTE, PAGE)).isEqualTo((byte) 9);
        mapping.close();
        assertThat(ProcSelf.mappingsOf("memfd:" + NoLeaks.NAME)).isZero();
    }

    @Test
    void readAndWriteThroughTheFile() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocateFrom("hello");
            assertThat(Fd.pwrite(fd, buf, PAGE)).isEqualTo(buf.byteSize());
            assertThat(Fd.write(fd, buf)).isEqualTo(buf.byteSize());
            assertThat(Fd.lseek(fd, 0, Fd.SEEK_SET)).isZero();
            MemorySegment in = arena.allocate(buf.byteSize());
            assertThat(Fd.read(fd, in)).isEqualTo(buf.byteSize());
            assertThat(in.getString(0)).isEqualTo("hello");
            assertThat(Fd.lseek(fd, 0, Fd.SEEK_DATA)).isZero();
            assertThat(Fd.lseek(fd, 0, Fd.SEEK_HOLE)).isEqualTo(2 * PAGE); // pages 0 and 1 hold data
        }
    }

    @Test
    void secretMemoryLeavesTheDirectMapAndRefusesFallocate() {
        int secret = Memfd.createSecret(Memfd.SECRET_CLOEXEC);
        try (Arena arena = Arena.ofConfined()) {
            Fd.ftruncate(secret, SIZE);
            assertErrno(() -> Fd.fallocate(secret, 0, 0, PAGE), Errno.EOPNOTSUPP);
            assertErrno(() -> Fd.fallocate(secret, Fd.FALLOC_FL_KEEP_SIZE | Fd.FALLOC_FL_PUNCH_HOLE, 0, PAGE),
                    Errno.EOPNOTSUPP);
            assertErrno(() -> Fd.ftruncate(secret, 2 * SIZE), Errno.EINVAL);
            assertErrno(() -> Mman.mmap(arena, SIZE, Mman.PROT_READ, Mman.MAP_PRIVATE, secret, 0), Errno.EINVAL);
            MemorySegment m = Mman.mmap(arena, SIZE, Mman.PROT_READ | Mman.PROT_WRITE, Mman.MAP_SHARED, secret, 0);
            m.set(JAVA_LONG, 0, 42);
            assertThat(m.get(JAVA_LONG, 0)).isEqualTo(42);
            assertErrno(() -> Fd.pread(secret, arena.allocate(8), 0), Errno.ESPIPE);
        } finally {
            Fd.close(secret);
        }
    }
}
