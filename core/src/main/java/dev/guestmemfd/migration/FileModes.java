package dev.guestmemfd.migration;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.EnumSet;
import java.util.Set;

/** The check that a file holding a secret is readable by its owner alone. */
final class FileModes {
    private static final Set<PosixFilePermission> GROUP_OR_OTHER = EnumSet.of(
            PosixFilePermission.GROUP_READ, PosixFilePermission.GROUP_WRITE, PosixFilePermission.GROUP_EXECUTE,
            PosixFilePermission.OTHERS_READ, PosixFilePermission.OTHERS_WRITE, PosixFilePermission.OTHERS_EXECUTE);

    private FileModes() {
    }

    /**
     * Refuses {@code file} unless it is a regular file that neither group nor others may touch.
     *
     * @param what what the file holds, for the message
     * @throws IOException when it is missing, not a regular file, or open to group or others
     */
    static void requireOwnerOnly(Path file, String what) throws IOException {
        if (!Files.isRegularFile(file)) {
            throw new IOException(file + ": no such file (" + what + ")");
        }
        Set<PosixFilePermission> mode = Files.getPosixFilePermissions(file);
        Set<PosixFilePermission> open = EnumSet.noneOf(PosixFilePermission.class);
        open.addAll(mode);
        open.retainAll(GROUP_OR_OTHER);
        if (!open.isEmpty()) {
            throw new IOException(file + " holds " + what + " but its mode is " + PosixFilePermissions.toString(mode)
                    + ": group or others may read it; make it 0600 (chmod 600 " + file + ")");
        }
    }
}
