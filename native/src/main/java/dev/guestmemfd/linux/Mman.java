package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/**
 * Memory mappings: {@code mmap}, {@code munmap}, {@code mprotect}, {@code madvise},
 * {@code mincore}.
 *
 * <p>A mapping is returned as a {@link MemorySegment} of exactly the mapped length whose
 * unmapping is tied to the {@link Arena} given: closing the arena unmaps it, and the JVM
 * guarantees that no thread is still accessing it at that moment.
 */
public final class Mman {
    public static final int PROT_NONE = 0;
    public static final int PROT_READ = 1;
    public static final int PROT_WRITE = 2;

    public static final int MAP_SHARED = 0x01;
    public static final int MAP_PRIVATE = 0x02;
    public static final int MAP_FIXED = 0x10;
    public static final int MAP_ANONYMOUS = 0x20;
    public static final int MAP_NORESERVE = 0x4000;
    public static final int MAP_POPULATE = 0x8000;

    public static final int MADV_NORMAL = 0;
    public static final int MADV_DONTNEED = 4;
    public static final int MADV_REMOVE = 9;
    public static final int MADV_HUGEPAGE = 14;
    public static final int MADV_POPULATE_READ = 22;
    public static final int MADV_POPULATE_WRITE = 23;

    /** The base page size of this machine. */
    public static final long PAGE_SIZE = 4096;

    private static final long MAP_FAILED = -1L;

    private Mman() {
    }

    private static final class mmap {
        static final MethodHandle HANDLE = Libc.downcall("mmap",
                FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG));
    }

    private static final class munmap {
        static final MethodHandle HANDLE =
                Libc.downcall("munmap", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
    }

    private static final class mprotect {
        static final MethodHandle HANDLE =
                Libc.downcall("mprotect", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
    }

    private static final class madvise {
        static final MethodHandle HANDLE =
                Libc.downcall("madvise", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
    }

    private static final class mincore {
        static final MethodHandle HANDLE =
                Libc.downcall("mincore", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS));
    }

    /**
     * Maps {@code length} bytes of {@code fd} from {@code offset}; {@code fd} -1 with
     * {@link #MAP_ANONYMOUS} maps anonymous memory.
     *
     * @param arena decides the lifetime: closing it unmaps the memory
     * @return a segment of exactly {@code length} bytes over the mapping
     * @throws LinuxException {@code EBADF}, {@code EINVAL}, {@code ENODEV} (the file cannot be
     *                        mapped), {@code EACCES}, {@code ENOMEM}, ...
     */
    @SuppressWarnings("restricted") // gives the kernel's mapping its true size and lifetime
    public static MemorySegment mmap(Arena arena, long length, int prot, int flags, int fd, long offset) {
        MemorySegment capture = Libc.capture();
        MemorySegment address;
        try {
            address = (MemorySegment) mmap.HANDLE.invokeExact(capture, MemorySegment.NULL, length, prot, flags, fd, offset);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (address.address() == MAP_FAILED) {
            throw Libc.failure(capture, "mmap(length=" + length + ", prot=" + Libc.hex(prot) + ", flags="
                    + Libc.hex(flags) + ", fd=" + fd + ", offset=" + offset + ")");
        }
        long start = address.address();
        return address.reinterpret(length, arena, ignored -> unmapQuietly(start, length));
    }

    /**
     * Maps {@code length} bytes like {@link #mmap}, but when {@code arena} closes it runs
     * {@code unmap} instead of unmapping: the caller unmaps (with {@link #munmap}) under its own
     * lock, so that nothing it does to the mapping meanwhile ({@code MAP_FIXED} over part of it)
     * can land on addresses that are no longer its own.
     *
     * @param unmap called once, with the mapping's address, when {@code arena} closes
     * @return a segment of exactly {@code length} bytes over the mapping
     * @throws LinuxException as {@link #mmap}
     */
    @SuppressWarnings("restricted") // the mapping's true size, and a lifetime whose end unmaps it
    public static MemorySegment mmap(Arena arena, long length, int prot, int flags, int fd, long offset,
                                     java.util.function.LongConsumer unmap) {
        long start = mmapAt(0, length, prot, flags, fd, offset);
        return MemorySegment.ofAddress(start).reinterpret(length, arena, ignored -> unmap.accept(start));
    }

    /**
     * Maps {@code length} bytes like {@link #mmap}, but leaves the lifetime to the caller:
     * nothing unmaps it but {@link #munmap}, and the segment returned stays valid for Java
     * after that; the caller must never hand it out.
     *
     * @return a segment of exactly {@code length} bytes over the mapping, of the global scope
     * @throws LinuxException as {@link #mmap}
     */
    @SuppressWarnings("restricted") // the caller owns the mapping's lifetime and keeps the segment to itself
    public static MemorySegment mmapUntied(long length, int prot, int flags, int fd, long offset) {
        return MemorySegment.ofAddress(mmapAt(0, length, prot, flags, fd, offset)).reinterpret(length);
    }

    /**
     * Replaces the pages at {@code [address, address + length)} with a new mapping, in one step
     * ({@code MAP_FIXED}): a thread touching those addresses finds either the old pages or the
     * new ones, never a hole another mapping could take.
     *
     * @param address page aligned, inside a mapping the caller owns
     * @throws LinuxException {@code EINVAL} (unaligned), {@code ENOMEM}, {@code EBADF}, ...
     */
    public static void mmapFixed(long address, long length, int prot, int flags, int fd, long offset) {
        if (address == 0) {
            throw new IllegalArgumentException("MAP_FIXED at address 0");
        }
        long at = mmapAt(address, length, prot, flags | MAP_FIXED, fd, offset);
        if (at != address) {
            throw new IllegalStateException("MAP_FIXED mapped at " + Libc.hex(at) + " instead of " + Libc.hex(address));
        }
    }

    private static long mmapAt(long hint, long length, int prot, int flags, int fd, long offset) {
        MemorySegment capture = Libc.capture();
        MemorySegment address;
        try {
            address = (MemorySegment) mmap.HANDLE.invokeExact(capture, MemorySegment.ofAddress(hint), length, prot, flags,
                    fd, offset);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (address.address() == MAP_FAILED) {
            throw Libc.failure(capture, "mmap(addr=" + Libc.hex(hint) + ", length=" + length + ", prot=" + Libc.hex(prot)
                    + ", flags=" + Libc.hex(flags) + ", fd=" + fd + ", offset=" + offset + ")");
        }
        return address.address();
    }

    /**
     * Unmaps a range that was not tied to an arena, or part of one that was.
     *
     * @throws LinuxException {@code EINVAL} for an unaligned address
     */
    public static void munmap(long address, long length) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) munmap.HANDLE.invokeExact(capture, MemorySegment.ofAddress(address), length);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "munmap(addr=" + Libc.hex(address) + ", length=" + length + ")");
        }
    }

    private static void unmapQuietly(long address, long length) {
        try {
            munmap(address, length);
        } catch (LinuxException e) {
            // An arena's cleanup cannot report failure; munmap of a range we mapped cannot fail.
            throw new IllegalStateException(e);
        }
    }

    /**
     * Changes the protection of the pages of {@code segment}.
     *
     * @throws LinuxException {@code EINVAL} (unaligned), {@code EACCES}, {@code ENOMEM} (not mapped)
     */
    public static void mprotect(MemorySegment segment, int prot) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) mprotect.HANDLE.invokeExact(capture, segment, segment.byteSize(), prot);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "mprotect(addr=" + Libc.hex(segment.address()) + ", length="
                    + segment.byteSize() + ", prot=" + Libc.hex(prot) + ")");
        }
    }

    /**
     * Gives the kernel advice about the pages of {@code segment}, e.g.
     * {@link #MADV_POPULATE_WRITE} (fault them all in now) or {@link #MADV_REMOVE} (free them).
     *
     * @throws LinuxException {@code EINVAL} (unaligned or not supported by this mapping), ...
     */
    public static void madvise(MemorySegment segment, int advice) {
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) madvise.HANDLE.invokeExact(capture, segment, segment.byteSize(), advice);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "madvise(addr=" + Libc.hex(segment.address()) + ", length="
                    + segment.byteSize() + ", advice=" + advice + ")");
        }
    }

    /**
     * Writes into {@code residency} one byte per page of {@code segment}: bit 0 is set when the
     * page is resident in memory (for a file mapping: present in the file's page cache).
     *
     * @throws LinuxException {@code EINVAL} (unaligned), {@code ENOMEM} (not mapped)
     */
    public static void mincore(MemorySegment segment, MemorySegment residency) {
        long pages = (segment.byteSize() + PAGE_SIZE - 1) / PAGE_SIZE;
        if (residency.byteSize() < pages) {
            throw new IndexOutOfBoundsException("residency holds " + residency.byteSize() + " bytes, needs " + pages);
        }
        MemorySegment capture = Libc.capture();
        int rc;
        try {
            rc = (int) mincore.HANDLE.invokeExact(capture, segment, segment.byteSize(), residency);
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
        if (rc < 0) {
            throw Libc.failure(capture, "mincore(addr=" + Libc.hex(segment.address()) + ", length="
                    + segment.byteSize() + ")");
        }
    }

    /**
     * {@return a segment over {@code [address, address + length)} of the global scope, to name
     * addresses that the caller maps itself to the kernel's calls ({@link #mincore},
     * {@link #madvise}); never to be handed out or accessed after the mapping is gone}
     */
    @SuppressWarnings("restricted") // the caller owns the mapping and keeps the segment to itself
    public static MemorySegment reach(long address, long length) {
        return MemorySegment.ofAddress(address).reinterpret(length);
    }

    /**
     * {@return a view of {@code length} bytes of {@code mapping} from {@code offset} whose
     * lifetime is {@code arena}'s} Closing {@code arena} revokes the view (and only the view):
     * the mapping itself stays.
     */
    @SuppressWarnings("restricted") // a second lifetime over memory that the mapping keeps alive
    public static MemorySegment view(MemorySegment mapping, long offset, long length, Arena arena) {
        return MemorySegment.ofAddress(mapping.asSlice(offset, length).address()).reinterpret(length, arena, null);
    }
}
