package dev.guestmemfd.cli;

import java.io.PrintWriter;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** The {@code gmem} command. */
@Command(name = "gmem", mixinStandardHelpOptions = true, version = "gmem 0.1.0",
        description = {
            "guest_memfd for the JVM: the memory of confidential VMs as a file whose pages are",
            "shared (the host may read them) or private (only the guest may), on real Linux memory",
            "and a real /dev/kvm."},
        subcommands = {InfoCommand.class, DemoCommand.class, MapCommand.class, ScriptCommand.class, BenchCommand.class, MigrateCommand.class,
            SnapshotCommand.class, RestoreCommand.class,
            CommandLine.HelpCommand.class})
public final class Gmem implements Runnable {
    static final int HELP_WIDTH = 100;

    @Option(names = "--verbose", scope = CommandLine.ScopeType.INHERIT,
            description = "Print the stack trace of an error.")
    boolean verbose;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    /**
     * {@return the command line, with the error handling of gmem} An error is one line on
     * standard error, or with {@code --json} one object on standard output; {@code --verbose}
     * adds the stack trace.
     */
    public static CommandLine commandLine() {
        Gmem gmem = new Gmem();
        CommandLine cli = new CommandLine(gmem);
        cli.setCaseInsensitiveEnumValuesAllowed(true);
        // The descriptions are written in lines of up to 100 columns: wider help keeps each whole.
        cli.setUsageHelpWidth(HELP_WIDTH);
        fullDescriptions(cli);
        cli.setExecutionExceptionHandler((e, line, parsed) -> {
            Failure failure = Failure.of(e);
            if (gmem.verbose) {
                e.printStackTrace(line.getErr());
                line.getErr().flush();
            }
            // The hint only where the line may not be enough: a failure without an errno.
            report(failure, parsed.originalArgs(), line, gmem.verbose || failure.errno() != null);
            return failure.exitStatus();
        });
        cli.setParameterExceptionHandler((e, args) -> {
            CommandLine line = e.getCommandLine();
            if (List.of(args).contains("--json")) {
                report(Failure.usage(e.getMessage()), List.of(args), line, true);
            } else {
                PrintWriter err = line.getErr();
                err.println("gmem: " + e.getMessage());
                if (!CommandLine.UnmatchedArgumentException.printSuggestions(e, err)) {
                    line.usage(err);
                }
                err.flush();
            }
            return Failure.USAGE;
        });
        return cli;
    }

    /** Prints a failure: one JSON object on standard output under {@code --json}, else one line on standard error. */
    private static void report(Failure failure, List<String> args, CommandLine line, boolean quiet) {
        if (args.contains("--json")) {
            Map<String, Object> json = new LinkedHashMap<>();
            json.put("error", failure.getMessage());
            json.put("errno", failure.errno() == null ? null : failure.errno().name());
            json.put("errnoNumber", failure.errno() == null ? null : failure.errno().number());
            PrintWriter out = line.getOut();
            out.println(Json.write(json));
            out.flush();
        } else {
            PrintWriter err = line.getErr();
            err.println("gmem: " + failure.getMessage() + (quiet ? "" : "  (--verbose shows the stack trace)"));
            err.flush();
        }
    }

    /**
     * Lists each subcommand with its whole description, not picocli's first line only, which
     * cuts a sentence in two. Applies to every command that has subcommands.
     */
    private static void fullDescriptions(CommandLine cli) {
        cli.getHelpSectionMap().put(CommandLine.Model.UsageMessageSpec.SECTION_KEY_COMMAND_LIST, help -> {
            Map<String, CommandLine.Help> subcommands = help.subcommands();
            if (subcommands.isEmpty()) {
                return "";
            }
            int width = subcommands.keySet().stream().mapToInt(String::length).max().orElse(0);
            StringBuilder out = new StringBuilder();
            for (Map.Entry<String, CommandLine.Help> e : subcommands.entrySet()) {
                CommandLine.Model.UsageMessageSpec usage = e.getValue().commandSpec().usageMessage();
                if (usage.hidden()) {
                    continue;
                }
                String[] lines = usage.description().length > 0 ? usage.description() : usage.header();
                String text = String.join(" ", lines).replace("%n", " ").replaceAll("\\s+", " ").strip();
                out.append(wrap(String.format("  %-" + width + "s  ", e.getKey()), text, HELP_WIDTH));
            }
            return out.toString();
        });
        for (CommandLine sub : cli.getSubcommands().values()) {
            if (!sub.getSubcommands().isEmpty()) {
                fullDescriptions(sub);
            }
        }
    }

    /** {@return {@code text} after {@code first}, wrapped at {@code columns} and indented under itself} */
    static String wrap(String first, String text, int columns) {
        StringBuilder out = new StringBuilder(first);
        String indent = " ".repeat(first.length());
        int column = first.length();
        boolean lineStart = true;
        for (String word : text.split(" ")) {
            if (!lineStart && column + 1 + word.length() > columns) {
                out.append('\n').append(indent);
                column = indent.length();
                lineStart = true;
            }
            if (!lineStart) {
                out.append(' ');
                column++;
            }
            out.append(word);
            column += word.length();
            lineStart = false;
        }
        return out.append('\n').toString();
    }

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }
}
