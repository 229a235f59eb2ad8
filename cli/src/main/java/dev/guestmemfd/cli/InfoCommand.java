package dev.guestmemfd.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "info", mixinStandardHelpOptions = true, description = "What this host offers to guest memory, and what the library uses here and why.")
final class InfoCommand implements Callable<Integer> {
    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Override
    public Integer call() {
        HostInfo info = HostInfo.probe();
        System.out.print(json ? Json.write(info.toJson()) + "\n" : info.toText());
        return 0;
    }
}
