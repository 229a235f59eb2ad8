package dev.guestmemfd;

/**
 * What a snapshot stream holds, as {@link Snapshot.Reader#verify} finds it: the file it was
 * taken from and the state each page ends in once every record is applied, read without a
 * target file.
 *
 * @param fileSize     bytes of the file the stream was taken from
 * @param records      records before the end, owner state included
 * @param rounds       passes over the file as the records show them: a snapshot makes one, a
 *                     pre-copy migration one per round. A pass ends where a page record goes back
 *                     to the offset of an earlier one or below; a round that only sends pages above
 *                     the last of the round before is counted with that round.
 * @param sharedPages  pages that end shared and hold memory
 * @param privatePages pages that end private and hold memory
 * @param sharedHoles  pages that end shared and hold none
 * @param privateHoles pages that end private and hold none
 * @param sharedBytes  bytes of shared page records, pages sent again in later rounds included
 * @param privateBytes bytes of private page records (sealed), pages sent again included
 * @param states       owner state records (a machine's description, its vCPUs)
 * @param stateBytes   bytes of the owner state records, opened
 * @param poisonedPages pages that end poisoned (a memory failure); each is counted among the
 *                     holes of its attribute too, as no memory of it travels
 */
public record SnapshotContents(long fileSize, long records, int rounds, long sharedPages, long privatePages,
                               long sharedHoles, long privateHoles, long sharedBytes, long privateBytes,
                               int states, long stateBytes, long poisonedPages) {
    /** The contents of a stream without poisoned pages. */
    public SnapshotContents(long fileSize, long records, int rounds, long sharedPages, long privatePages,
                            long sharedHoles, long privateHoles, long sharedBytes, long privateBytes,
                            int states, long stateBytes) {
        this(fileSize, records, rounds, sharedPages, privatePages, sharedHoles, privateHoles, sharedBytes, privateBytes,
                states, stateBytes, 0);
    }

    /** {@return pages of the file that no record mentions: a restore leaves them as the target has them} */
    public long unrecordedPages() {
        return fileSize / GuestMemory.PAGE_SIZE - sharedPages - privatePages - sharedHoles - privateHoles;
    }
}
