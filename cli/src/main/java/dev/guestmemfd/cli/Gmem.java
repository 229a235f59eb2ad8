package dev.guestmemfd.cli;

import java.io.PrintWriter;
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
    @Option(names = "--verbose", scope = CommandLine.ScopeType.INHERIT,
            description = "Print the stack trace of an error.")
    boolean verbose;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    /** {@return the command line, with the error handling of gmem: one line, or a trace with --verbose} */
    public static CommandLine commandLine() {
        Gmem gmem = new Gmem();
        CommandLine cli = new CommandLine(gmem);
        cli.setCaseInsensitiveEnumValuesAllowed(true);
        cli.setExecutionExceptionHandler((e, line, parsed) -> {
            PrintWriter err = line.getErr();
            if (gmem.verbose) {
                e.printStackTrace(err);
            } else {
                err.println("gmem: " + e.getMessage() + "  (--verbose shows the stack trace)");
            }
            err.flush();
            return 1;
        });
        return cli;
    }

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }
}
