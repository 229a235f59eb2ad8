package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "script", description = {
    "Run a script of guest_memfd operations, one result line per command.",
    "Commands: create SIZE [mmap] [init_shared] [no_direct_map] [flags=HEX] [backing=memfd|secret|kernel],",
    "stat, fallocate MODE OFFSET LEN, mmap OFFSET LEN [shared|private], munmap ID,",
    "write ID OFFSET LEN BYTEHEX, read ID OFFSET LEN, convert OFFSET LEN shared|private zero|preserve,",
    "pin OFFSET LEN, unpin ID, close. Results: ok, data HH*COUNT..., err ERRNO, fault."})
final class ScriptCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "FILE", description = "The script, or - for standard input.")
    String file;

    @Option(names = "--backing", description = "Backing of a create without backing=: ${COMPLETION-CANDIDATES}.")
    Backing backing;

    @Override
    public Integer call() throws IOException {
        return run(readScript(file), backing, true) ? 0 : 2;
    }

    static List<String> readScript(String file) throws IOException {
        if (file.equals("-")) {
            return new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).lines().toList();
        }
        return Files.readAllLines(Path.of(file));
    }

    /**
     * Runs a script, printing each result when {@code print}.
     *
     * @return false when a line was malformed
     */
    static boolean run(List<String> lines, Backing backing, boolean print) {
        return runKeeping(lines, backing, print, runner -> { });
    }

    /** Runs a script and hands the runner, with its file still open, to {@code after}. */
    static boolean runKeeping(List<String> lines, Backing backing, boolean print,
                              java.util.function.Consumer<ScriptRunner> after) {
        boolean wellFormed = true;
        try (ScriptRunner runner = new ScriptRunner(backing)) {
            int n = 0;
            for (String line : lines) {
                n++;
                String result;
                try {
                    result = runner.execute(line);
                } catch (ScriptRunner.Malformed e) {
                    System.err.println("gmem: line " + n + ": " + e.getMessage());
                    result = "err EINVAL";
                    wellFormed = false;
                }
                if (result != null && print) {
                    System.out.println(result);
                }
            }
            after.accept(runner);
        }
        return wellFormed;
    }
}
