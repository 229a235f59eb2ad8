package dev.guestmemfd;

/**
 * A run of pages in the same state.
 *
 * @param offset    file offset of the first page
 * @param length    bytes
 * @param attribute shared or private
 * @param allocated whether the pages hold memory (false: a hole, reads as zero)
 */
public record PageRun(long offset, long length, Attribute attribute, boolean allocated) {
}
