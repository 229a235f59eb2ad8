package dev.guestmemfd.cli;

import dev.guestmemfd.Errno;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The files a user names on the command line, checked before any work starts, so that a
 * wrong path fails at once, in one line that names the file and the cause.
 */
final class UserFiles {
    private UserFiles() {
    }

    /**
     * {@return the lines of a script file, or of standard input for {@code -}}
     *
     * @param what what the file is to the command, e.g. "script"
     * @throws Failure naming the file and the cause: ENOENT, EACCES, EISDIR, EILSEQ
     */
    static List<String> readLines(String what, String file) {
        if (file.equals("-")) {
            return new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).lines().toList();
        }
        Path path = Path.of(file);
        requireReadable(what, path);
        try {
            return Files.readAllLines(path);
        } catch (CharacterCodingException e) {
            throw new Failure(Errno.of(84), what + " " + file + ": not UTF-8 text (EILSEQ)");
        } catch (IOException e) {
            throw Failure.io(what + " " + file, e);
        }
    }

    /**
     * Checks that {@code path} is a regular file this user may read.
     *
     * @throws Failure naming the file and the cause: ENOENT, EISDIR, EACCES
     */
    static void requireReadable(String what, Path path) {
        if (!Files.exists(path)) {
            throw new Failure(Errno.ENOENT, what + " " + path + ": no such file or directory (ENOENT)");
        }
        if (Files.isDirectory(path)) {
            throw new Failure(Errno.of(21), what + " " + path + ": is a directory, not a file (EISDIR)");
        }
        if (!Files.isReadable(path)) {
            throw new Failure(Errno.EACCES, what + " " + path + ": permission denied (EACCES)");
        }
    }

    /**
     * Checks that {@code path} can be written: its directory exists and may be written, and it
     * is not itself a directory. Nothing is created.
     *
     * @throws Failure naming the file and the cause: ENOENT, ENOTDIR, EISDIR, EACCES
     */
    static void requireWritable(String what, Path path) {
        Path parent = path.toAbsolutePath().getParent();
        if (parent != null && !Files.exists(parent)) {
            throw new Failure(Errno.ENOENT, what + " " + path + ": the directory " + parent + " does not exist (ENOENT)");
        }
        if (parent != null && !Files.isDirectory(parent)) {
            throw new Failure(Errno.of(20), what + " " + path + ": " + parent + " is not a directory (ENOTDIR)");
        }
        if (Files.isDirectory(path)) {
            throw new Failure(Errno.of(21), what + " " + path + ": is a directory (EISDIR)");
        }
        if (Files.exists(path) ? !Files.isWritable(path) : parent != null && !Files.isWritable(parent)) {
            throw new Failure(Errno.EACCES, what + " " + path + ": permission denied (EACCES)");
        }
    }
}
