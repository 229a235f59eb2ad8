package dev.guestmemfd.cli;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostAccessFault;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Owner;
import dev.guestmemfd.PageCounts;
import dev.guestmemfd.kvm.GuestLayout;
import dev.guestmemfd.kvm.GuestProgram;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Machine;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "demo", mixinStandardHelpOptions = true, description = {
    "Boot a real KVM guest whose memory is a guestmemfd file: the guest keeps a secret in a",
    "private page and shares a message; the host reads the message and is refused the secret.",
    "Without KVM, the library alone plays the same story on a file of the same size."})
final class DemoCommand implements Callable<Integer> {
    static final long MEMORY = GuestLayout.memoryFor(1) + (4L << 20);
    static final long SECRET = GuestLayout.region(0);
    static final long BUFFER = SECRET + 0x10000;

    @Option(names = "--json", description = "Print one JSON object instead of the story.")
    boolean json;

    @Option(names = "--backing", description = "Force a backing: ${COMPLETION-CANDIDATES} (default: the best this host has).")
    Backing backing;

    private final List<String> story = new ArrayList<>();
    private boolean colour;

    @Override
    public Integer call() throws InterruptedException {
        colour = !json && System.console() != null;
        if (backing != null) {
            GuestOptions.requireAvailable(backing);  // refused, never replaced by another
        }
        HostInfo host = HostInfo.probe();
        Map<String, Object> result = host.kvm() ? withGuest(host) : libraryAlone(host, backing != null ? backing : Backing.MEMFD);
        if (json) {
            System.out.println(Json.write(result));
        } else {
            story.forEach(System.out::println);
        }
        boolean ok = "ok".equals(result.get("hostReadShared")) && "denied".equals(result.get("hostReadPrivate"));
        return ok ? 0 : 1;
    }

    private void say(String line) {
        story.add(line);
    }

    private void drawMap(String title, GuestMemory memory) {
        say("");
        say(title);
        say(picture(memory));
    }

    private String picture(GuestMemory memory) {
        MemoryMapView view = new MemoryMapView(memory.pageRuns(), memory.size());
        return (view.terminal(colour) + view.runs(12)).stripTrailing();
    }

    private Map<String, Object> withGuest(HostInfo host) throws InterruptedException {
        Backing chosen = backing != null ? backing : host.preferredBacking();
        say("guest_memfd keeps a confidential VM's memory as a file of pages that are shared (the host may");
        say("read them) or private (only the guest may). This demo boots a real KVM guest whose RAM is such");
        say("a file, managed by this library, on this host's /dev/kvm.");
        say("");
        say("backing: " + host.backingReason());
        say("private pages: " + host.conversionPath());
        Machine.Config config = Machine.Config.of(GuestProgram.DEMO, chosen, 1).withMemorySize(MEMORY);
        Map<String, Object> out = new LinkedHashMap<>();
        try (Kvm kvm = Kvm.open(); Machine machine = Machine.boot(kvm, config)) {
            GuestMemory memory = machine.memory();
            say("launch digest of the private code and page tables (SHA-384): " + machine.launchDigest().hex());
            drawMap("memory map at boot (code, page tables and stacks are private; the rest is shared and empty):", memory);
            String[] refused = new String[1];
            List<String> whileRunning = new ArrayList<>();
            machine.listen((vcpu, command, gpa, bytes, answer) -> {
                if (command == Machine.CMD_HOST_READ) {
                    whileRunning.add(picture(memory));
                    try {
                        machine.hostMapping().read(SECRET, 16);
                        refused[0] = "the host could read the secret";
                    } catch (HostAccessFault fault) {
                        refused[0] = fault.getMessage();
                    }
                }
            });
            Machine.Outcome outcome = machine.run(Duration.ofSeconds(30));
            Machine.VcpuOutcome vcpu = outcome.vcpus().getFirst();
            say("");
            say("the guest said:");
            for (String line : outcome.serial().split("\n")) {
                say("  | " + line);
            }
            List<String> reads = machine.hostReads();
            String message = reads.isEmpty() ? null : reads.getFirst();
            say("");
            say("host read the shared buffer through its mapping: " + (message == null ? "(nothing)" : "\"" + message + "\""));
            say("host tried to read the secret's private page: " + (refused[0] == null ? "(did not try)" : "refused: " + refused[0]));
            if (!whileRunning.isEmpty()) {
                say("");
                say("memory map while the secret was private and the message shared:");
                say(whileRunning.getFirst());
            }
            drawMap("memory map after the guest gave the page back and freed the buffer:", memory);
            boolean denied = refused[0] != null && refused[0].contains("private") && outcome.hostDenials() > 0;
            PageCounts pages = memory.pageCounts();
            out.put("backing", chosen.name().toLowerCase(java.util.Locale.ROOT));
            out.put("guestOutput", outcome.serial());
            out.put("hostReadShared", message != null && message.startsWith("Hello, host!") ? "ok" : "failed");
            out.put("hostMessage", message);
            out.put("hostReadPrivate", denied ? "denied" : "allowed");
            out.put("conversions", memory.conversions());
            out.put("exit", vcpu.how() + (vcpu.how().equals("result") ? " " + vcpu.value() : ""));
            out.put("pages", pageJson(pages));
            out.put("launchDigest", machine.launchDigest().hex());
            out.put("conversionPath", host.conversionPath());
            say("");
            say("conversions: " + memory.conversions() + ", guest stopped: " + out.get("exit") + ", " + pageLine(pages));
        }
        return out;
    }

    private Map<String, Object> libraryAlone(HostInfo host, Backing chosen) {
        say("No KVM here (" + host.kvmError() + "): skipping the guest; showing the library alone,");
        say("on the " + GuestOptions.name(chosen) + " backing.");
        Map<String, Object> out = new LinkedHashMap<>();
        try (GuestMemory memory = GuestMemory.create(MEMORY, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), chosen);
             HostMapping map = memory.map(0, MEMORY)) {
            Binding owner = memory.bind(new Owner() { }, 0, MEMORY);
            memory.convert(SECRET, GuestMemory.PAGE_SIZE, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(SECRET - owner.offset()).setString(0, "launch key 5ec2e7-c0ffee");
            map.write(BUFFER, "Hello, host! This buffer is shared; my secret is not.".getBytes(StandardCharsets.US_ASCII));
            String message = new String(map.read(BUFFER, 53), StandardCharsets.US_ASCII);
            String denied;
            try {
                map.read(SECRET, 16);
                denied = "allowed";
            } catch (HostAccessFault fault) {
                denied = "denied";
                say("host tried to read the private page: refused: " + fault.getMessage());
            }
            say("host read the shared buffer: \"" + message + "\"");
            drawMap("memory map:", memory);
            // As the guest does at its end: the secret's page given back (zeroed), the buffer freed.
            memory.convert(SECRET, GuestMemory.PAGE_SIZE, Attribute.SHARED, Content.ZERO);
            memory.punchHole(BUFFER, GuestMemory.PAGE_SIZE);
            drawMap("memory map after the page was given back and the buffer freed:", memory);
            // The counts of the JSON and of the story's last line are taken at one moment, after the map.
            PageCounts pages = memory.pageCounts();
            say("");
            say("conversions: " + memory.conversions() + ", guest: skipped, no KVM; " + pageLine(pages));
            out.put("backing", GuestOptions.name(chosen));
            out.put("guestOutput", "");
            out.put("hostReadShared", "ok");
            out.put("hostMessage", message);
            out.put("hostReadPrivate", denied);
            out.put("conversions", memory.conversions());
            out.put("exit", "skipped: no KVM");
            out.put("pages", pageJson(pages));
        }
        return out;
    }

    /** {@return the page counts as the story's last line says them: the same numbers as the JSON's} */
    static String pageLine(PageCounts pages) {
        return String.format(java.util.Locale.ROOT, "pages: %d in all, %d shared and %d private; %d allocated, %d absent",
                pages.pages(), pages.shared(), pages.privates(), pages.allocated(), pages.absent());
    }

    private static Map<String, Object> pageJson(PageCounts pages) {
        Map<String, Object> json = new LinkedHashMap<>();
        json.put("total", pages.pages());
        json.put("shared", pages.shared());
        json.put("private", pages.privates());
        json.put("allocated", pages.allocated());
        json.put("absent", pages.absent());
        return json;
    }
}
