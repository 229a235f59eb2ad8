package dev.guestmemfd.cli;

import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.kvm.KvmException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.util.Locale;
import java.util.Map;

/**
 * Why a gmem command failed, as a user reads it: one line that names the thing (a file, an
 * option, a device) and the cause, with the errno where there is one, and the exit status.
 * Any exception a command throws is turned into one ({@link #of(Throwable)}), so no user
 * sees a Java class name unless they ask for the trace with {@code --verbose}.
 */
final class Failure extends RuntimeException {
    private static final long serialVersionUID = 1L;
    /** Exit status of a refused argument, as picocli gives for a malformed command line. */
    static final int USAGE = 2;

    /** Nullable: not every failure has an errno. */
    private final Errno errno;
    private final int exitStatus;

    Failure(Errno errno, String message) {
        this(errno, message, 1, null);
    }

    private Failure(Errno errno, String message, int exitStatus, Throwable cause) {
        super(message, cause);
        this.errno = errno;
        this.exitStatus = exitStatus;
    }

    /** {@return a refused argument: EINVAL, exit status 2} */
    static Failure usage(String message) {
        return new Failure(Errno.EINVAL, message, USAGE, null);
    }

    /** {@return the failure of an I/O call on {@code thing} ("script /tmp", "key file k"), its cause named} */
    static Failure io(String thing, IOException e) {
        Failure f = of(e);
        return new Failure(f.errno, thing + ": " + f.reason(e), 1, e);
    }

    /** {@return the errno, or null when the failure has none} */
    Errno errno() {
        return errno;
    }

    int exitStatus() {
        return exitStatus;
    }

    /** {@return the failure as a user reads it} */
    static Failure of(Throwable t) {
        if (t instanceof UncheckedIOException u && u.getCause() != null) {
            t = u.getCause();
        }
        return switch (t) {
            case Failure f -> f;
            case GuestMemoryException e -> new Failure(e.errno(), e.getMessage(), 1, e);
            case KvmException e -> new Failure(e.errno(), e.getMessage(), 1, e);
            case FileSystemException e -> {
                Errno errno = fileErrno(e);
                String file = e.getFile() == null ? "" : e.getFile() + ": ";
                yield new Failure(errno, file + reasonOf(e, errno), 1, e);
            }
            case IOException e -> {
                Errno errno = errnoOfReason(e.getMessage());
                yield new Failure(errno, e.getMessage() == null ? "input/output error" : withErrno(e.getMessage(), errno), 1, e);
            }
            default -> new Failure(null, t.getMessage() == null || t.getMessage().isBlank()
                    ? "an internal error without a message (--verbose shows where)" : t.getMessage(), 1, t);
        };
    }

    /** The cause of an I/O failure without the file name, which the caller puts in front. */
    private String reason(IOException e) {
        if (e instanceof FileSystemException fs) {
            return reasonOf(fs, errno);
        }
        return getMessage();
    }

    private static String reasonOf(FileSystemException e, Errno errno) {
        String reason = switch (e) {
            case NoSuchFileException x -> "no such file or directory";
            case AccessDeniedException x -> "permission denied";
            case FileAlreadyExistsException x -> "already exists";
            case NotDirectoryException x -> "not a directory";
            case DirectoryNotEmptyException x -> "directory not empty";
            default -> e.getReason() != null ? e.getReason().toLowerCase(Locale.ROOT) : "input/output error";
        };
        if (e.getOtherFile() != null) {
            reason += " (" + e.getOtherFile() + ")";
        }
        return withErrno(reason, errno);
    }

    private static String withErrno(String reason, Errno errno) {
        return errno == null || reason.contains(errno.name()) ? reason : reason + " (" + errno.name() + ")";
    }

    private static Errno fileErrno(FileSystemException e) {
        return switch (e) {
            case NoSuchFileException x -> Errno.ENOENT;
            case AccessDeniedException x -> Errno.EACCES;
            case FileAlreadyExistsException x -> Errno.EEXIST;
            case NotDirectoryException x -> Errno.of(20);
            case DirectoryNotEmptyException x -> Errno.of(39);
            default -> errnoOfReason(e.getReason());
        };
    }

    /** The JDK reports some errnos only as strerror text: these are the ones a gmem command meets. */
    private static final Map<String, Integer> STRERROR = Map.of(
            "is a directory", 21,
            "no such file or directory", 2,
            "permission denied", 13,
            "not a directory", 20,
            "read-only file system", 30,
            "no space left on device", 28,
            "connection refused", 111,
            "file too large", 27,
            "too many open files", 24);

    private static Errno errnoOfReason(String reason) {
        if (reason == null) {
            return null;
        }
        String r = reason.toLowerCase(Locale.ROOT);
        for (Map.Entry<String, Integer> e : STRERROR.entrySet()) {
            if (r.contains(e.getKey())) {
                return Errno.of(e.getValue());
            }
        }
        return null;
    }
}
