package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "script", mixinStandardHelpOptions = true, description = {
    "Run a script of guest_memfd operations, one result line per command.",
    "Commands: create SIZE [mmap] [init_shared] [no_direct_map] [flags=HEX] [backing=memfd|secret|kernel|hugetlb] [pagesize=2M|1G],",
    "stat, fallocate MODE OFFSET LEN, mmap OFFSET LEN [shared|private], munmap ID,",
    "write ID OFFSET LEN BYTEHEX, read ID OFFSET LEN, convert OFFSET LEN shared|private unspecified|zero|preserve (zero: to shared only),",
    "pin OFFSET LEN, unpin ID, close. Results: ok, data HH*COUNT..., err ERRNO, fault."})
final class ScriptCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "FILE", description = "The script, or - for standard input.")
    String file;

    @Option(names = "--backing", description = "Backing of a create without backing=: ${COMPLETION-CANDIDATES}.")
    Backing backing;

    @Override
    public Integer call() {
        if (backing != null) {
            GuestOptions.requireAvailable(backing);
        }
        return run(UserFiles.readLines("script", file), backing, true) ? 0 : 2;
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
                String note = runner.takeNote();
                if (note != null) {
                    System.err.println("gmem: line " + n + ": " + note);
                }
            }
            after.accept(runner);
        }
        return wellFormed;
    }
}
