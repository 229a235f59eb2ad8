package dev.guestmemfd.linux;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;

/**
 * The fields of x86-64 {@code struct stat} that the library reads.
 *
 * @param mode      file type and permission bits
 * @param size      size in bytes
 * @param blockSize preferred I/O block size ({@code st_blksize})
 * @param blocks    512-byte blocks allocated
 */
public record Stat(int mode, long size, long blockSize, long blocks) {
    /** The kernel's x86-64 {@code struct stat}, 144 bytes. */
    static final StructLayout LAYOUT = MemoryLayout.structLayout(
            JAVA_LONG.withName("st_dev"),
            JAVA_LONG.withName("st_ino"),
            JAVA_LONG.withName("st_nlink"),
            JAVA_INT.withName("st_mode"),
            JAVA_INT.withName("st_uid"),
            JAVA_INT.withName("st_gid"),
            JAVA_INT.withName("__pad0"),
            JAVA_LONG.withName("st_rdev"),
            JAVA_LONG.withName("st_size"),
            JAVA_LONG.withName("st_blksize"),
            JAVA_LONG.withName("st_blocks"),
            MemoryLayout.sequenceLayout(3, MemoryLayout.sequenceLayout(2, JAVA_LONG)).withName("st_times"),
            MemoryLayout.sequenceLayout(3, JAVA_LONG).withName("__unused"));

    static Stat from(MemorySegment s) {
        return new Stat(
                s.get(JAVA_INT, LAYOUT.byteOffset(MemoryLayout.PathElement.groupElement("st_mode"))),
                s.get(JAVA_LONG, LAYOUT.byteOffset(MemoryLayout.PathElement.groupElement("st_size"))),
                s.get(JAVA_LONG, LAYOUT.byteOffset(MemoryLayout.PathElement.groupElement("st_blksize"))),
                s.get(JAVA_LONG, LAYOUT.byteOffset(MemoryLayout.PathElement.groupElement("st_blocks"))));
    }
}
