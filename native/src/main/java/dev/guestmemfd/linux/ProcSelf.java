package dev.guestmemfd.linux;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

/** What {@code /proc/self} says about this process: open descriptors and mappings. */
public final class ProcSelf {
    private ProcSelf() {
    }

    /** {@return the number of file descriptors this process has open} */
    public static int openDescriptors() {
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return (int) fds.count();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * {@return the number of open descriptors whose target (the {@code /proc/self/fd} link)
     * contains one of {@code needles}, e.g. {@code memfd:}, {@code secretmem}, {@code kvm}}
     */
    public static int descriptorsTo(String... needles) {
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return (int) fds.map(ProcSelf::target).filter(t -> {
                for (String n : needles) {
                    if (t.contains(n)) {
                        return true;
                    }
                }
                return false;
            }).count();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static String target(Path link) {
        try {
            return Files.readSymbolicLink(link).toString();
        } catch (IOException closedMeanwhile) {
            return "";
        }
    }

    /** {@return the number of mappings in {@code /proc/self/maps} whose path contains {@code needle}} */
    public static long mappingsOf(String needle) {
        try (Stream<String> lines = Files.lines(Path.of("/proc/self/maps"))) {
            return lines.filter(l -> l.contains(needle)).count();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
