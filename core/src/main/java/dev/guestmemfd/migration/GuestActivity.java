package dev.guestmemfd.migration;

import java.util.BitSet;

/**
 * What writes a guest memory file at the source of a memory-only migration, so that the
 * migration can pause it for the last round and give the file back if the migration fails.
 * It plays the part of a running guest and its host: host-side writes go through the library
 * and are seen by the file's {@link dev.guestmemfd.ChangeLog}; writes through an owner's
 * {@link dev.guestmemfd.Binding#pages()} are not (as a guest's through a memslot are not), so
 * the activity reports them itself, as KVM's dirty log would.
 *
 * @implSpec {@link #pause()} and {@link #resume()} are called by the migrating thread, in that
 * order, at most once each; {@link #written()} may be called while the activity runs.
 */
public interface GuestActivity {
    /** Stops every write to the file and returns once none is in flight. */
    void pause();

    /** Lets writes go on again after a migration that failed once {@link #pause()} was called. */
    void resume();

    /**
     * {@return the pages (file offset / page size) written through an owner's mapping since the
     * last call, and starts afresh} The written bytes must be in place before a page is
     * reported, so that a page caught half written is reported again.
     */
    BitSet written();
}
