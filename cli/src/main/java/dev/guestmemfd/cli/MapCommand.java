package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.GuestMemory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "map", mixinStandardHelpOptions = true, description = {
    "Draw a file's pages (shared, private, absent) after running a script;",
    "without one, the demo's scenario."})
final class MapCommand implements Callable<Integer> {
    @Parameters(index = "0", arity = "0..1", paramLabel = "SCRIPT", description = "A script (see 'gmem script'), or - for standard input.")
    String script;

    @Option(names = "--svg", paramLabel = "FILE", description = "Also write the map as SVG to FILE.")
    Path svg;

    @Option(names = "--backing", description = "Backing of a create without backing=: ${COMPLETION-CANDIDATES}.")
    Backing backing;

    /** The demo's story as a script: a secret page made private, a shared message, a punched buffer. */
    static final List<String> DEMO_SCENARIO = List.of(
            "create 0x800000 mmap init_shared",
            "fallocate keep_size 0 0x80000          # code, page tables, stacks",
            "convert 0 0x80000 private preserve      # loaded and measured into private memory",
            "convert 0x400000 0x1000 private preserve    # the secret's page",
            "mmap 0 0x800000",
            "write 1 0x410000 0x1000 48              # the shared message",
            "read 1 0x400000 8                       # the host tries the secret: fault",
            "fallocate keep_size 0x600000 0x100000   # memory the guest will use",
            "convert 0x700000 0x100000 private preserve");

    @Override
    public Integer call() {
        if (svg != null) {
            UserFiles.requireWritable("--svg", svg);  // before the script runs: a wrong path fails at once
        }
        if (backing != null) {
            GuestOptions.requireAvailable(backing);
        }
        List<String> lines = script == null ? DEMO_SCENARIO : UserFiles.readLines("script", script);
        boolean[] drawn = new boolean[1];
        boolean ok = ScriptCommand.runKeeping(lines, backing, false, runner -> {
            GuestMemory memory = runner.memory();
            if (memory == null) {
                System.err.println("gmem: the script leaves no file open to draw");
                return;
            }
            MemoryMapView view;
            try (ProgressBar bar = ProgressBar.onTerminal("reading page state", 1)) {
                view = new MemoryMapView(memory.pageRuns(), memory.size(), memory.blockSize(), memory.poisonedPages());
                bar.update(1);
            }
            System.out.print(view.terminal(System.console() != null));
            System.out.print(view.runs(24));
            if (svg != null) {
                try {
                    Files.writeString(svg, view.svg());
                } catch (IOException e) {
                    throw Failure.io("--svg " + svg, e);
                }
                System.out.println("SVG written to " + svg);
            }
            drawn[0] = true;
        });
        return ok && drawn[0] ? 0 : 2;
    }
}
