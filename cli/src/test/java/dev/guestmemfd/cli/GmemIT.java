package dev.guestmemfd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import javax.xml.parsers.DocumentBuilderFactory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.w3c.dom.Element;
import org.w3c.dom.NodeList;

/** {@code ./gmem} as a user runs it: a subprocess, its output and its exit status. */
class GmemIT {
    static final Path ROOT = Path.of(System.getProperty("gmem.root", "..")).toAbsolutePath().normalize();

    record Result(int status, String out, String err) { }

    static Result gmem(String stdin, String... args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>();
        command.add(ROOT.resolve("gmem").toString());
        command.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(command).directory(ROOT.toFile());
        pb.environment().put("GMEM_SKIP_BUILD", "1");
        Path out = Files.createTempFile("gmem", ".out");
        Path err = Files.createTempFile("gmem", ".err");
        pb.redirectOutput(out.toFile()).redirectError(err.toFile());
        Process p = pb.start();
        if (stdin != null) {
            p.getOutputStream().write(stdin.getBytes(StandardCharsets.UTF_8));
        }
        p.getOutputStream().close();
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).as("gmem %s finished", String.join(" ", args)).isTrue();
        Result r = new Result(p.exitValue(), Files.readString(out), Files.readString(err));
        Files.delete(out);
        Files.delete(err);
        return r;
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> json(String text) {
        return (Map<String, Object>) JsonParser.parse(text);
    }

    static boolean kvm() {
        return Files.isReadable(Path.of("/dev/kvm")) && Files.isWritable(Path.of("/dev/kvm"));
    }

    @Test
    void infoDescribesThisHost() throws Exception {
        Result r = gmem(null, "info", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> info = json(r.out());
        assertThat((String) info.get("kernel")).isNotBlank();
        @SuppressWarnings("unchecked")
        Map<String, Object> kvm = (Map<String, Object>) info.get("kvm");
        assertThat(kvm.get("available")).isEqualTo(kvm());
        assertThat((String) info.get("conversionPath")).isNotBlank();
        @SuppressWarnings("unchecked")
        Map<String, Object> migration = (Map<String, Object>) info.get("migration");
        if (kvm()) {
            assertThat((String) migration.get("memfd")).as("ordinary memslots log dirty pages").startsWith("pre-copy");
            if (migration.containsKey("kernel")) {
                assertThat((String) migration.get("kernel")).as("guest_memfd memslots do not").contains("stop-and-copy", "EINVAL");
            }
        }
        Result text = gmem(null, "info");
        assertThat(text.out()).contains("kernel", "backing", "private pages");
    }

    @Test
    @SuppressWarnings("unchecked")
    void demoRunsARealGuestThatSharesAMessageAndKeepsItsSecret() throws Exception {
        Result r = gmem(null, "demo", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> demo = json(r.out());
        assertThat(demo.get("hostReadShared")).isEqualTo("ok");
        assertThat(demo.get("hostReadPrivate")).isEqualTo("denied");
        assertThat((Long) demo.get("conversions")).isGreaterThanOrEqualTo(2);
        Map<String, Object> pages = (Map<String, Object>) demo.get("pages");
        assertThat((Long) pages.get("shared") + (Long) pages.get("private")).isEqualTo(pages.get("total"));
        assertThat((Long) pages.get("absent")).isPositive();
        if (kvm()) {
            assertThat((String) demo.get("guestOutput")).contains("guest: keeping a secret in a private page", "guest: bye");
            assertThat(demo.get("exit")).isEqualTo("result 0");
            assertThat((String) demo.get("hostMessage")).startsWith("Hello, host!");
        } else {
            assertThat(demo.get("exit")).isEqualTo("skipped: no KVM");
        }
        Result story = gmem(null, "demo");
        assertThat(story.status()).isZero();
        assertThat(story.out()).contains("the guest said:", "refused", "memory map at boot", "legend:");
    }

    static final String GOLDEN_SCRIPT = """
            # the kernel's guest_memfd rules, and the library's conversions
            create 0x10000 mmap init_shared
            stat
            fallocate 0 0 4096
            fallocate punch_hole 0 4096
            fallocate keep_size 1 4096
            fallocate keep_size 0 0x20000
            fallocate keep_size,punch_hole 0x20000 0x1000
            fallocate keep_size,zero_range 0 4096
            mmap 0 0x1000 private
            mmap 0 0x11000
            write 1 0 0x2000 aa
            read 1 0 0x3000
            convert 0x1000 0x1000 private zero
            read 1 0 0x2000
            read 1 0 0x1000
            read 1 0x10000 1
            write 1 0x800 0x1000 bb
            pin 0 0x1000
            pin 0x1000 0x1000
            convert 0 0x1000 private zero
            unpin 1
            convert 0 0x1000 private preserve
            convert 0 0x2000 shared preserve
            read 1 0 0x2000
            fallocate keep_size,punch_hole 0 0x10000
            munmap 1
            read 1 0 1
            create 4096 flags=8
            create 4095
            create 4096
            mmap 0 4096
            close
            stat
            """;

    static final String GOLDEN_OUTPUT = """
            ok
            ok size=65536 blksize=4096
            err EOPNOTSUPP
            err EOPNOTSUPP
            err EINVAL
            err EINVAL
            ok
            err EOPNOTSUPP
            err EINVAL
            ok
            ok
            data aa*8192 00*4096
            ok
            fault
            data aa*4096
            fault
            fault
            ok
            err EFAULT
            err EAGAIN
            ok
            ok
            ok
            data aa*4096 00*4096
            ok
            ok
            err EINVAL
            err EINVAL
            err EINVAL
            ok
            err ENODEV
            ok
            err EBADF
            """;

    @ParameterizedTest
    @ValueSource(strings = {"memfd", "secret", "kernel"})
    void aScriptGivesTheSameOutputOnEveryBacking(String backing) throws Exception {
        if (backing.equals("kernel")) {
            assumeTrue(kvm(), "the kernel backing needs /dev/kvm, which this host lacks");
        }
        Result r = gmem(GOLDEN_SCRIPT, "script", "--backing", backing.toUpperCase(java.util.Locale.ROOT), "-");
        assertThat(r.err()).isEmpty();
        assertThat(r.status()).isZero();
        assertThat(r.out()).isEqualTo(GOLDEN_OUTPUT);
    }

    @Test
    void mapDrawsTheTerminalPictureAndAWellFormedSvgWithTheRightPageCounts() throws Exception {
        Path script = Files.createTempFile("map", ".gmem");
        Path svg = Files.createTempFile("map", ".svg");
        Files.writeString(script, """
                create 0x40000 mmap init_shared      # 64 pages
                fallocate keep_size 0 0x4000          # 4 allocated
                convert 0x8000 0x8000 private zero    # 8 private
                """);
        Result r = gmem(null, "map", script.toString(), "--svg", svg.toString());
        assertThat(r.status()).as(r.err()).isZero();
        assertThat(r.out()).contains("legend:", "256 KiB file, 64 pages", "0x00008000-0x00010000  private");
        var doc = DocumentBuilderFactory.newInstance().newDocumentBuilder().parse(svg.toFile());
        NodeList rects = doc.getElementsByTagName("rect");
        long shared = 0;
        long privates = 0;
        long absent = 0;
        long pages = 0;
        for (int i = 0; i < rects.getLength(); i++) {
            Element e = (Element) rects.item(i);
            if (e.getAttribute("class").equals("block")) {
                shared += Long.parseLong(e.getAttribute("data-shared"));
                privates += Long.parseLong(e.getAttribute("data-private"));
                absent += Long.parseLong(e.getAttribute("data-absent"));
                pages += Long.parseLong(e.getAttribute("data-pages"));
            }
        }
        assertThat(pages).isEqualTo(64);
        assertThat(shared).isEqualTo(56);
        assertThat(privates).isEqualTo(8);
        assertThat(absent).isEqualTo(60);
        Files.delete(script);
        Files.delete(svg);
    }

    @Test
    void aGigabyteFileIsDrawnAtAReadableScale() throws Exception {
        Result r = gmem("create 0x40000000 mmap init_shared\nconvert 0x10000000 0x100000 private zero\n", "map", "-");
        assertThat(r.status()).as(r.err()).isZero();
        assertThat(r.out()).contains("1 GiB file, 262144 pages, one block = 1024 pages");
        assertThat(r.out().lines().filter(l -> l.length() > 80)).as("lines wider than a terminal").isEmpty();
        assertThat(r.out().lines().filter(l -> l.matches(" +0x[0-9a-f]+  [SPp.]+"))).hasSize(4);
        assertThat(r.err()).as("no progress bar when the output is not a terminal").doesNotContain("\r");
    }

    @Test
    @SuppressWarnings("unchecked")
    void quickBenchmarksReportEveryGroup() throws Exception {
        Result r = gmem(null, "bench", "--quick", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> bench = json(r.out());
        assertThat(bench).containsKeys("machine", "overhead", "conversionCost", "conversionRate", "revocation", "metadata", "guest");
        List<Object> overhead = (List<Object>) bench.get("overhead");
        assertThat(overhead).as("gcc builds the kernel side here").isNotEmpty();
        assertThat(overhead).allSatisfy(row -> assertThat(((Map<String, Object>) row).get("ratio")).isInstanceOf(Number.class));
        Map<String, Object> worst = (Map<String, Object>) ((Map<String, Object>) bench.get("metadata")).get("worstCase");
        assertThat(((Number) worst.get("bitsPerPage")).doubleValue()).isLessThanOrEqualTo(2.0);
        assertThat((Long) ((Map<String, Object>) bench.get("conversionRate")).get("perSecond")).isPositive();
        assertThat((Long) ((Map<String, Object>) bench.get("revocation")).get("leasesRevokedMidRead")).isPositive();
    }

    @Test
    void aRunningGuestMigratesToAnotherProcessAndCarriesOn() throws Exception {
        assumeTrue(kvm(), "migration needs /dev/kvm, which this host lacks");
        Result r = gmem(null, "migrate", "--demo", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> m = json(r.out());
        assertThat(m.get("guestContinued")).isEqualTo(true);
        assertThat((Long) m.get("lastTickAtDestination")).isGreaterThan((Long) m.get("lastTickAtSource"));
        assertThat((Long) m.get("bytesSent")).isPositive().isLessThan((Long) m.get("memoryBytes"));
        assertThat(m).containsKeys("downtimeMs", "totalMs", "roundBytes", "why");
    }

    /** The memfd backing's ordinary memslots log dirty pages: rounds while the guest runs, then a short one paused. */
    @Test
    void onTheMemfdBackingTheGuestMigratesByPreCopyWithItsAllocatedShare() throws Exception {
        assumeTrue(kvm(), "migration needs /dev/kvm, which this host lacks");
        Result r = gmem(null, "migrate", "--demo", "--json", "--backing", "memfd", "--memory", "32M", "--allocated", "25");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> m = json(r.out());
        assertThat(m.get("path")).isEqualTo("pre-copy");
        assertThat(m.get("guestContinued")).isEqualTo(true);
        assertThat((Long) m.get("allocatedBytes")).as("a quarter of 32 MiB filled, plus the guest's own")
                .isGreaterThanOrEqualTo(8L << 20);
        assertThat((Long) m.get("bytesSent")).isGreaterThanOrEqualTo((Long) m.get("allocatedBytes"));
        @SuppressWarnings("unchecked")
        java.util.List<Long> rounds = (java.util.List<Long>) m.get("roundBytes");
        assertThat(rounds.size()).isGreaterThanOrEqualTo(2);
        assertThat(rounds.getLast()).isLessThan(rounds.getFirst());
    }

    /** Two terminals: one listens, the other sends its guest there; the count carries on across them. */
    @Test
    void aGuestMovesBetweenAListeningAndASendingGmem() throws Exception {
        assumeTrue(kvm(), "migration needs /dev/kvm, which this host lacks");
        ProcessBuilder pb = new ProcessBuilder(ROOT.resolve("gmem").toString(), "migrate", "--listen", "0", "--json")
                .directory(ROOT.toFile()).redirectError(ProcessBuilder.Redirect.INHERIT);
        pb.environment().put("GMEM_SKIP_BUILD", "1");
        Process listener = pb.start();
        try {
            java.io.BufferedReader lines = new java.io.BufferedReader(
                    new java.io.InputStreamReader(listener.getInputStream(), StandardCharsets.UTF_8));
            String first = lines.readLine();
            assertThat(first).startsWith("listening on 127.0.0.1:");
            Result sent = gmem(null, "migrate", "--to", first.substring("listening on ".length()), "--json", "--backing", "memfd");
            assertThat(sent.status()).as(sent.err()).isZero();
            Map<String, Object> source = json(sent.out());
            assertThat(source.get("path")).isEqualTo("pre-copy");
            String rest = lines.lines().collect(java.util.stream.Collectors.joining("\n"));
            assertThat(listener.waitFor(120, TimeUnit.SECONDS)).isTrue();
            assertThat(listener.exitValue()).isZero();
            Map<String, Object> destination = json(rest);
            assertThat(destination.get("firstTick")).isEqualTo((Long) source.get("lastTickAtSource") + 1);
        } finally {
            listener.destroyForcibly();
        }
    }

    @Test
    void aSnapshotFileRestoresAndTheGuestCountsOnButNotWhenAlteredOrWithAnotherKey(@TempDir Path dir) throws Exception {
        assumeTrue(kvm(), "snapshot runs a guest and needs /dev/kvm, which this host lacks");
        Path file = dir.resolve("counter.gsnap");
        Result saved = gmem(null, "snapshot", file.toString(), "--json", "--memory", "16M", "--allocated", "50");
        assertThat(saved.status()).as(saved.err()).isZero();
        Map<String, Object> s = json(saved.out());
        assertThat(java.nio.file.Files.getPosixFilePermissions(dir.resolve("counter.gsnap.key")))
                .containsExactlyInAnyOrder(java.nio.file.attribute.PosixFilePermission.OWNER_READ,
                        java.nio.file.attribute.PosixFilePermission.OWNER_WRITE);
        assertThat((Long) s.get("fileBytes")).isLessThan((Long) s.get("memoryBytes"));
        Result restored = gmem(null, "restore", file.toString(), "--json");
        assertThat(restored.status()).as(restored.err()).isZero();
        Map<String, Object> r = json(restored.out());
        assertThat(r.get("firstTick")).as("carries on from the tick after the snapshot").isEqualTo((Long) s.get("lastTick") + 1);

        byte[] bytes = java.nio.file.Files.readAllBytes(file);
        bytes[bytes.length / 2] ^= 1;
        Path altered = dir.resolve("altered.gsnap");
        java.nio.file.Files.write(altered, bytes);
        Result refused = gmem(null, "restore", altered.toString(), "--key", dir.resolve("counter.gsnap.key").toString());
        assertThat(refused.status()).isEqualTo(1);
        assertThat(refused.err()).contains("EBADMSG");
        java.nio.file.Files.write(dir.resolve("other.key"), new byte[32]);
        Result wrongKey = gmem(null, "restore", file.toString(), "--key", dir.resolve("other.key").toString());
        assertThat(wrongKey.status()).isEqualTo(1);
        assertThat(wrongKey.err()).contains("EBADMSG");
    }

    @Test
    void badArgumentsGetUsageHelpAndErrorsOneLine() throws Exception {
        Result bad = gmem(null, "map", "--no-such-option");
        assertThat(bad.status()).isEqualTo(2);
        assertThat(bad.err()).contains("Unknown option", "Usage: gmem map");
        Result missing = gmem(null, "script", "/no/such/script");
        assertThat(missing.status()).isEqualTo(1);
        assertThat(missing.err().strip().lines()).singleElement().asString().startsWith("gmem: ");
        Result verbose = gmem(null, "--verbose", "script", "/no/such/script");
        assertThat(verbose.status()).isEqualTo(1);
        assertThat(verbose.err()).contains("NoSuchFileException", "\tat ");
        Result malformed = gmem("frobnicate 1 2\n", "script", "-");
        assertThat(malformed.status()).isEqualTo(2);
        assertThat(malformed.out()).isEqualTo("err EINVAL\n");
        assertThat(malformed.err()).contains("line 1: unknown command 'frobnicate'");
    }
}
