package dev.guestmemfd;

/**
 * How many pages of a file are in each state.
 *
 * @param pages     all pages of the file
 * @param shared    shared pages, allocated or not
 * @param privates  private pages, allocated or not
 * @param allocated pages that hold memory
 */
public record PageCounts(long pages, long shared, long privates, long allocated) {
    /** {@return pages that hold no memory (holes)} */
    public long absent() {
        return pages - allocated;
    }
}
