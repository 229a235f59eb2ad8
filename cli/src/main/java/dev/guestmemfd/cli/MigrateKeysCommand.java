package dev.guestmemfd.cli;

import dev.guestmemfd.migration.ExampleIdentities;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "keys", mixinStandardHelpOptions = true, description = {
    "Make an example set of identities for trying out `gmem migrate` between hosts, with the JDK's keytool:",
    "source, destination and stranger (trusted by nobody). For each NAME: NAME.p12 and NAME.password (0600),",
    "given to --identity, and NAME.crt, given to the other end's --peer."})
final class MigrateKeysCommand implements Callable<Integer> {
    @Option(names = "--out", paramLabel = "DIR", description = "Where to make them (made 0700; must not hold a set already).")
    Path out;

    @Override
    public Integer call() throws Exception {
        if (out == null) {
            throw Failure.usage("migrate keys: say where, --out DIR");
        }
        ExampleIdentities.create(out);
        for (String name : ExampleIdentities.NAMES) {
            System.out.println(out.resolve(name + ".p12") + "  " + out.resolve(name + ".password") + "  " + out.resolve(name + ".crt"));
        }
        System.out.println("destination: gmem migrate --listen ADDR:PORT --identity " + out.resolve("destination.p12")
                + " --peer " + out.resolve("source.crt"));
        System.out.println("source:      gmem migrate --connect ADDR:PORT --identity " + out.resolve("source.p12")
                + " --peer " + out.resolve("destination.crt"));
        return 0;
    }
}
