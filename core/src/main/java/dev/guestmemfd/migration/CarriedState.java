package dev.guestmemfd.migration;

/**
 * State that travels with a guest memory file in a memory-only migration, besides its pages:
 * an owner's own view of the pages (an architecture's page table) or what a workload knows of
 * them. The source exports it once every writer is paused; the destination imports it into an
 * object of the same {@link #kind()} once every page has landed and the stream checked out.
 * It travels sealed, as private pages do.
 */
public interface CarriedState {
    /** {@return what this state is, e.g. an architecture's name: the destination's must be the same} */
    String kind();

    /** {@return this state as bytes, at most 16 MiB; called with every writer of the file paused} */
    byte[] exportState();

    /**
     * Takes on a state exported by an object of the same kind.
     *
     * @throws IllegalArgumentException when {@code state} is not one this kind exports, or is
     *                                  for a file of another size; this object is then unchanged
     */
    void importState(byte[] state);
}
