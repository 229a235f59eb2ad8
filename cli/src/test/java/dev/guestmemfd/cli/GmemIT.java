package dev.guestmemfd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.guestmemfd.kvm.Kvm;
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
        return gmemWith(Map.of(), stdin, args);
    }

    /** Runs gmem as on a host without /dev/kvm, whatever this host has. */
    static Result withoutKvm(String stdin, String... args) throws IOException, InterruptedException {
        return gmemWith(Map.of(NO_KVM, "1"), stdin, args);
    }

    static final String NO_KVM = "GMEM_NO_KVM";

    /** Runs ./gmem with this test's environment (GMEM_NO_KVM included, when set) plus {@code env}. */
    static Result gmemWith(Map<String, String> env, String stdin, String... args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>();
        command.add(ROOT.resolve("gmem").toString());
        command.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(command).directory(ROOT.toFile());
        pb.environment().put("GMEM_SKIP_BUILD", "1");
        pb.environment().putAll(env);
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

    /** {@return true when gmem, run from here, can use /dev/kvm: false under GMEM_NO_KVM=1 too} */
    static boolean kvm() {
        return Kvm.available();
    }

    /** Skips the calling test, with the reason in the report, where there is no KVM. */
    static void assumeKvm(String what) {
        assumeTrue(Kvm.available(), () -> what + " needs /dev/kvm: " + Kvm.unavailableReason().orElse(""));
    }

    /** An error as a user must see it: one line, from gmem, without a Java class name. */
    static void assertOneLineError(Result r, String... contains) {
        assertThat(r.status()).as(r.toString()).isNotZero();
        assertThat(r.err().strip().lines()).as(r.err()).singleElement().asString().startsWith("gmem: ").contains(contains);
        assertThat(r.err()).doesNotContainPattern("[a-z]+\\.[a-z]+\\.[A-Za-z.]*(Exception|Error)\\b")
                .doesNotContain("Exception", "java.", "\tat ");
    }

    @Test
    @SuppressWarnings("unchecked")
    void infoDescribesThisHost() throws Exception {
        Result r = gmem(null, "info", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> info = json(r.out());
        assertThat((String) info.get("kernel")).isNotBlank();
        @SuppressWarnings("unchecked")
        Map<String, Object> kvm = (Map<String, Object>) info.get("kvm");
        assertThat(kvm.get("available")).isEqualTo(kvm());
        assertThat((String) info.get("conversionPath")).isNotBlank();
        // The library's VMs are of the default type, which keeps no private memory: even a kernel
        // with the in-place conversion series leaves their conversion to the library.
        assertThat(info.get("kernelBackingConversion")).isEqualTo(kvm() ? "library" : null);
        @SuppressWarnings("unchecked")
        Map<String, Object> migration = (Map<String, Object>) info.get("migration");
        if (kvm()) {
            assertThat((String) migration.get("memfd")).as("ordinary memslots log dirty pages").startsWith("pre-copy");
            if (migration.containsKey("kernel")) {
                assertThat((String) migration.get("kernel")).as("guest_memfd memslots do not").contains("stop-and-copy", "EINVAL");
            }
        }
        if (!kvm()) {
            assertThat(kvm.get("reason")).isEqualTo(Kvm.unavailableReason().orElseThrow());
        }
        // The NUMA nodes as sysfs lists them: each with its CPUs and memory, one at least with memory.
        @SuppressWarnings("unchecked")
        List<Object> nodes = (List<Object>) info.get("numaNodes");
        assertThat(nodes).hasSameSizeAs(NumaNode.read(NumaNode.SYSFS));
        if (java.nio.file.Files.isDirectory(NumaNode.SYSFS)) {
            assertThat(nodes).isNotEmpty().allSatisfy(n -> assertThat((Map<String, Object>) n)
                    .containsKeys("node", "cpus", "memoryBytes", "freeBytes"));
            assertThat(nodes).anySatisfy(n -> assertThat((Long) ((Map<String, Object>) n).get("memoryBytes")).isPositive());
        }
        Result text = gmem(null, "info");
        assertThat(text.out()).contains("kernel", "backing", "private pages", "backing memfd       yes");
        if (java.nio.file.Files.isDirectory(NumaNode.SYSFS)) {
            assertThat(text.out()).contains("NUMA node 0 ");
        }
    }

    /** Runs on every host: without KVM, info says why and what still works, and lists each backing. */
    @Test
    @SuppressWarnings("unchecked")
    void infoWithoutKvmSaysWhyAndWhatStillWorks() throws Exception {
        Result r = withoutKvm(null, "info", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> info = json(r.out());
        Map<String, Object> kvm = (Map<String, Object>) info.get("kvm");
        assertThat(kvm.get("available")).isEqualTo(false);
        assertThat((String) kvm.get("reason")).contains(NO_KVM);
        assertThat((List<Object>) kvm.get("stillWorks")).isNotEmpty().anySatisfy(w -> assertThat((String) w).contains("snapshot verify"));
        assertThat((List<Object>) kvm.get("needsKvm")).isNotEmpty();
        Map<String, Object> backings = (Map<String, Object>) info.get("backings");
        assertThat(backings).containsOnlyKeys("memfd", "secret", "kernel", "hugetlb_2m", "hugetlb_1g");
        Map<String, Object> huge = (Map<String, Object>) backings.get("hugetlb_2m");
        assertThat(huge.get("available").equals(true) == (huge.get("reason") == null)).as("a reason exactly when unavailable").isTrue();
        // Every huge page pool of the host, as the kernel shows it.
        assertThat((List<Object>) info.get("hugetlbPools")).allSatisfy(pool ->
                assertThat((Map<String, Object>) pool).containsKeys("pageSize", "total", "free", "reserved", "surplus"));
        Map<String, Object> kernel = (Map<String, Object>) backings.get("kernel");
        assertThat(kernel.get("available")).isEqualTo(false);
        assertThat((String) kernel.get("reason")).contains(NO_KVM);
        Map<String, Object> memfd = (Map<String, Object>) backings.get("memfd");
        assertThat(memfd.get("available")).isEqualTo(true);
        assertThat(memfd.get("reason")).isNull();
        Map<String, Object> secret = (Map<String, Object>) backings.get("secret");
        assertThat(secret.get("available").equals(true) == (secret.get("reason") == null)).as("a reason exactly when unavailable").isTrue();
        assertThat(info.get("backing")).isEqualTo("memfd");
        assertThat((Map<String, Object>) info.get("migration")).isEmpty();

        Result text = withoutKvm(null, "info");
        assertThat(text.status()).isZero();
        assertThat(text.out()).contains("/dev/kvm            no: " + NO_KVM, "backing kernel      no: " + NO_KVM,
                "backing memfd       yes", "without KVM, these still work:", "gmem snapshot verify", "these need KVM:");
    }

    @Test
    @SuppressWarnings("unchecked")
    void demoRunsARealGuestThatSharesAMessageAndKeepsItsSecret() throws Exception {
        assumeKvm("the demo's guest");
        Result r = gmem(null, "demo", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> demo = json(r.out());
        assertThat(demo.get("hostReadShared")).isEqualTo("ok");
        assertThat(demo.get("hostReadPrivate")).isEqualTo("denied");
        assertThat((Long) demo.get("conversions")).isGreaterThanOrEqualTo(2);
        Map<String, Object> pages = (Map<String, Object>) demo.get("pages");
        assertThat((Long) pages.get("shared") + (Long) pages.get("private")).isEqualTo(pages.get("total"));
        assertThat((Long) pages.get("absent")).isPositive();
        assertThat((String) demo.get("guestOutput")).contains("guest: keeping a secret in a private page", "guest: bye");
        assertThat(demo.get("exit")).isEqualTo("result 0");
        assertThat((String) demo.get("hostMessage")).startsWith("Hello, host!");
        Result story = gmem(null, "demo");
        assertThat(story.status()).isZero();
        assertThat(story.out()).contains("the guest said:", "refused", "memory map at boot", "legend:");
        assertThat(storyPages(story.out())).as("the story's page counts are the JSON's").isEqualTo(pages);
    }

    /** Runs on every host: GMEM_NO_KVM=1 makes gmem behave as on one without /dev/kvm. */
    @Test
    @SuppressWarnings("unchecked")
    void demoWithoutKvmShowsTheLibraryAloneAndItsJsonCountsAreTheStorys() throws Exception {
        Result r = withoutKvm(null, "demo", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> demo = json(r.out());
        assertThat(demo.get("exit")).isEqualTo("skipped: no KVM");
        assertThat(demo.get("backing")).isEqualTo("memfd");
        assertThat(demo.get("hostReadShared")).isEqualTo("ok");
        assertThat(demo.get("hostReadPrivate")).isEqualTo("denied");
        Map<String, Object> pages = (Map<String, Object>) demo.get("pages");
        assertThat((Long) pages.get("shared") + (Long) pages.get("private")).isEqualTo(pages.get("total"));
        assertThat((Long) pages.get("allocated") + (Long) pages.get("absent")).isEqualTo(pages.get("total"));
        Result story = withoutKvm(null, "demo");
        assertThat(story.status()).as(story.err()).isZero();
        assertThat(story.out()).contains("No KVM here (GMEM_NO_KVM", "refused", "legend:", "after the page was given back");
        assertThat(storyPages(story.out())).as("the story's page counts are the JSON's").isEqualTo(pages);

        Result secret = withoutKvm(null, "demo", "--json", "--backing", "secret");
        if (secret.status() == 0) {
            assertThat(json(secret.out()).get("backing")).as("the backing asked for, not memfd instead").isEqualTo("secret");
        } else {
            assertThat(json(secret.out()).get("errno")).as("a host without memfd_secret refuses it").isEqualTo("ENODEV");
        }
    }

    /** {@return the counts of the story's "pages: N in all, ..." line, keyed as the JSON's} */
    static Map<String, Object> storyPages(String story) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile(
                "pages: (\\d+) in all, (\\d+) shared and (\\d+) private; (\\d+) allocated, (\\d+) absent").matcher(story);
        assertThat(m.find()).as("a pages line in:%n%s", story).isTrue();
        return Map.of("total", Long.parseLong(m.group(1)), "shared", Long.parseLong(m.group(2)),
                "private", Long.parseLong(m.group(3)), "allocated", Long.parseLong(m.group(4)), "absent", Long.parseLong(m.group(5)));
    }

    /** An unavailable backing is refused, with the reason, and never replaced by another. */
    @Test
    void aBackingThisHostLacksIsRefusedWithItsReason() throws Exception {
        for (String command : List.of("demo", "script", "map")) {
            List<String> args = new ArrayList<>(List.of(command, "--backing", "kernel"));
            if (command.equals("script")) {
                args.add("-");
            }
            Result r = withoutKvm("create 0x10000\n", args.toArray(String[]::new));
            assertOneLineError(r, "--backing kernel", "this host does not offer it", NO_KVM);
            assertThat(r.out()).as("nothing ran").isEmpty();
        }
        Result json = withoutKvm(null, "demo", "--backing", "kernel", "--json");
        assertThat(json.status()).isNotZero();
        Map<String, Object> error = json(json.out());
        assertThat(error.get("errno")).isEqualTo("ENODEV");
        assertThat((String) error.get("error")).contains("kernel", NO_KVM);
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
            convert 0x1000 0x1000 private preserve
            read 1 0 0x2000
            read 1 0 0x1000
            read 1 0x10000 1
            write 1 0x800 0x1000 bb
            pin 0 0x1000
            pin 0x1000 0x1000
            convert 0 0x1000 private preserve
            unpin 1
            convert 0 0x1000 private preserve
            convert 0 0x2000 shared preserve
            read 1 0 0x2000
            convert 0 0x2000 shared zero
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
            err EOPNOTSUPP
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
            data aa*8192
            ok
            data 00*8192
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

    /** backing=hugetlb: sizes of whole huge pages, 4 KiB offsets, attributes and punches inside them. */
    @Test
    void aScriptCreatesOnHugePagesAndWorksAt4KiBInsideThem() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(dev.guestmemfd.Backing.HUGETLB_2M.isAvailable(),
                () -> dev.guestmemfd.Backing.HUGETLB_2M.unavailableReason().orElse(""));
        Result r = gmem("""
                create 0x10000 mmap backing=hugetlb
                create 0x200000 mmap init_shared backing=hugetlb pagesize=2M
                stat
                mmap 0x1000 0x3000
                write 1 0 0x3000 aa
                convert 0x2000 0x1000 private unspecified
                read 1 0 0x1000
                read 1 0x1000 1
                fallocate keep_size,punch_hole 0x1000 0x1000
                read 1 0 0x1000
                read 1 0x2000 0x1000
                convert 0x2000 0x1000 shared preserve
                read 1 0x1000 0x1000
                """, "script", "-");
        assertThat(r.err()).isEmpty();
        assertThat(r.out()).isEqualTo("""
                err EINVAL
                ok
                ok size=2097152 blksize=2097152
                ok
                ok
                ok
                data aa*4096
                fault
                ok
                data 00*4096
                data aa*4096
                ok
                data aa*4096
                """);
        Result wrong = gmem("create 0x200000 pagesize=2M\n", "script", "-");
        assertThat(wrong.out()).isEqualTo("err EINVAL\n");
        assertThat(wrong.err()).contains("pagesize= goes with backing=hugetlb");
    }

    @ParameterizedTest
    @ValueSource(strings = {"memfd", "secret", "kernel"})
    void aScriptGivesTheSameOutputOnEveryBacking(String backing) throws Exception {
        if (backing.equals("kernel")) {
            assumeKvm("the kernel backing");
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
                convert 0x8000 0x8000 private preserve    # 8 private
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
        Result r = gmem("create 0x40000000 mmap init_shared\nconvert 0x10000000 0x100000 private preserve\n", "map", "-");
        assertThat(r.status()).as(r.err()).isZero();
        assertThat(r.out()).contains("1 GiB file, 262144 pages, one block = 1024 pages");
        assertThat(r.out().lines().filter(l -> l.length() > 80)).as("lines wider than a terminal").isEmpty();
        assertThat(r.out().lines().filter(l -> l.matches(" +0x[0-9a-f]+  [SPp.]+"))).hasSize(4);
        assertThat(r.err()).as("no progress bar when the output is not a terminal").doesNotContain("\r");
    }

    @Test
    void aPoisonedPageIsRefusedInScriptsUntilPunchedAndMapDrawsIt() throws Exception {
        String script = """
                create 0x40000 mmap init_shared backing=memfd
                mmap 0 0x40000
                write 1 0x5000 0x1000 aa
                poison 0x5000
                poison 0x5000
                poison 0x7000
                read 1 0x5000 8
                write 1 0x4000 0x2000 bb
                pin 0x5000 0x1000
                convert 0 0x40000 private unspecified
                read 1 0x4000 8
                poison 0x5001
                """;
        Result r = gmem(script, "script", "-");
        assertThat(r.out().lines().toList()).containsExactly("ok", "ok", "ok", "ok", "ok", "err EINVAL", "err EHWPOISON",
                "err EHWPOISON", "err EHWPOISON", "err EHWPOISON", "data 00*8", "err EINVAL");
        Result map = gmem(script.replace("poison 0x7000", "fallocate punch_hole,keep_size 0x7000 0x1000"), "map", "-");
        assertThat(map.out()).contains("X poisoned", "poisoned: 1 page, refused with EHWPOISON until punched: 0x5000");
        Result punched = gmem("create 0x40000 mmap init_shared backing=memfd\nfallocate keep_size 0x5000 0x1000\npoison 0x5000\n"
                + "fallocate keep_size,punch_hole 0x5000 0x1000\nmmap 0 0x40000\nread 1 0x5000 4\n", "script", "-");
        assertThat(punched.out().lines().toList()).containsExactly("ok", "ok", "ok", "ok", "ok", "data 00*4");
    }

    @Test
    @SuppressWarnings("unchecked")
    void quickBenchmarksReportEveryGroup() throws Exception {
        Result r = gmem(null, "bench", "--quick", "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> bench = json(r.out());
        assertThat(bench).containsKeys("machine", "overhead", "conversionCost", "conversionRate", "revocation", "metadata", "guest");
        // hugePages: populate against memset, judged, or skipped with the reason where the pool is too small.
        Map<String, Object> huge = (Map<String, Object>) bench.get("hugePages");
        assertThat(huge).isNotNull();
        if (!huge.containsKey("skipped")) {
            assertThat(huge).containsKeys("populate", "memset", "populateVsMemset", "vs4k", "conversion", "firstTouch");
            assertThat(((Map<String, Object>) huge.get("populateVsMemset")).get("goalMet")).isInstanceOf(Boolean.class);
        }
        List<Object> overhead = (List<Object>) bench.get("overhead");
        assertThat(overhead).as("gcc builds the kernel side here").isNotEmpty();
        assertThat(overhead).allSatisfy(row -> assertThat(((Map<String, Object>) row).get("ratio")).isInstanceOf(Number.class));
        Map<String, Object> worst = (Map<String, Object>) ((Map<String, Object>) bench.get("metadata")).get("worstCase");
        assertThat(((Number) worst.get("bitsPerPage")).doubleValue()).isLessThanOrEqualTo(2.0);
        assertThat((Long) ((Map<String, Object>) bench.get("conversionRate")).get("perSecond")).isPositive();
        assertThat((Long) ((Map<String, Object>) bench.get("revocation")).get("leasesRevokedMidRead")).isPositive();
        // Every figure with a goal says whether it met it, and the summary lists the misses.
        assertThat(overhead).allSatisfy(row -> {
            Map<String, Object> m = (Map<String, Object>) row;
            assertThat(m.get("goalMet")).isEqualTo(((Number) m.get("ratio")).doubleValue() <= 1.05);
        });
        assertThat(((Map<String, Object>) bench.get("revocation")).get("goalMet")).isInstanceOf(Boolean.class);
        assertThat(((Map<String, Object>) bench.get("conversionRate")).get("goalMet")).isInstanceOf(Boolean.class);
        assertThat(worst.get("goalMet")).isEqualTo(true);
        long missedRows = overhead.stream().filter(row -> ((Map<String, Object>) row).get("goalMet").equals(false)).count();
        assertThat(((List<Object>) bench.get("goalsMissed")).size()).isGreaterThanOrEqualTo((int) missedRows);
    }

    @Test
    void aRunningGuestMigratesToAnotherProcessAndCarriesOn() throws Exception {
        assumeKvm("migration");
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
        assumeKvm("migration");
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
        assumeKvm("migration");
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
        assumeKvm("taking a snapshot (it runs a guest)");
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

        Result verified = withoutKvm(null, "snapshot", "verify", file.toString(), "--json");
        assertThat(verified.status()).as(verified.err()).isZero();
        Map<String, Object> v = json(verified.out());
        assertThat(v.get("valid")).isEqualTo(true);
        assertThat(v.get("memoryBytes")).isEqualTo(s.get("memoryBytes"));
        assertThat(v.get("rounds")).isEqualTo(1L);
        @SuppressWarnings("unchecked")
        Map<String, Object> vbytes = (Map<String, Object>) v.get("bytes");
        assertThat((Long) vbytes.get("shared") + (Long) vbytes.get("private")).as("the page bytes saved")
                .isEqualTo(s.get("pageBytes"));
        assertThat((Long) vbytes.get("private")).as("half the filled share was made private").isPositive();
        Result alteredVerify = withoutKvm(null, "snapshot", "verify", altered.toString(), "--key", dir.resolve("counter.gsnap.key").toString());
        assertOneLineError(alteredVerify, "EBADMSG", altered.toString());
    }

    static final List<List<String>> SUBCOMMANDS = List.of(List.of("info"), List.of("demo"), List.of("map"), List.of("script"),
            List.of("bench"), List.of("migrate"), List.of("snapshot"), List.of("snapshot", "verify"), List.of("restore"));

    @Test
    void everySubcommandTakesHelp() throws Exception {
        for (List<String> command : SUBCOMMANDS) {
            List<String> args = new ArrayList<>(command);
            args.add("--help");
            Result r = withoutKvm(null, args.toArray(String[]::new));
            assertThat(r.status()).as("gmem %s --help: %s", command, r.err()).isZero();
            assertThat(r.out()).startsWith("Usage: gmem " + String.join(" ", command) + " ");
            assertThat(r.err()).isEmpty();
        }
    }

    /** gmem --help lists each command's whole description: picocli's list shows only a first line. */
    @Test
    void theCommandListShowsWholeDescriptions() throws Exception {
        Result r = gmem(null, "--help");
        assertThat(r.status()).isZero();
        String help = r.out().replaceAll("\\s+", " ");
        for (Class<?> command : List.of(InfoCommand.class, DemoCommand.class, MapCommand.class, ScriptCommand.class,
                BenchCommand.class, MigrateCommand.class, SnapshotCommand.class, RestoreCommand.class)) {
            String description = String.join(" ", command.getAnnotation(picocli.CommandLine.Command.class).description());
            assertThat(help).as(command.getSimpleName()).contains(description.replaceAll("\\s+", " ").strip());
        }
        assertThat(r.out().lines()).allSatisfy(l -> assertThat(l.length()).isLessThanOrEqualTo(100));
        Result snapshot = gmem(null, "snapshot", "--help");
        assertThat(snapshot.out().replaceAll("\\s+", " ")).contains(String.join(" ",
                SnapshotVerifyCommand.class.getAnnotation(picocli.CommandLine.Command.class).description()).replaceAll("\\s+", " "));
    }

    /**
     * Issue 16: where there is no KVM, the demo moves a guest memory file owned by an
     * architecture model to a child process (which has no KVM either) while a workload writes,
     * and the child checks every page; the report has the KVM demo's fields.
     */
    @Test
    void withoutKvmTheDemoMigratesAGuestMemoryFileAndItsModelOwner() throws Exception {
        Result r = withoutKvm(null, "migrate", "--demo", "--json", "--memory", "32M", "--allocated", "40");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> m = json(r.out());
        assertThat(m).containsKeys("downtimeMs", "totalMs", "bytesSent", "memoryBytes", "guestContinued", "path",
                "owner", "roundBytes", "allocatedBytes");
        assertThat(m.get("path")).isEqualTo("memory-only");
        assertThat(m.get("owner")).isEqualTo("SEV-SNP");
        assertThat(m.get("guestContinued")).isEqualTo(true);
        assertThat(m.get("memoryBytes")).isEqualTo(32L << 20);
        assertThat((Long) m.get("allocatedBytes")).isGreaterThan(10L << 20).isLessThan(16L << 20);
        assertThat((Long) m.get("bytesSent")).isGreaterThanOrEqualTo((Long) m.get("allocatedBytes"));
        assertThat((Double) m.get("downtimeMs")).isPositive().isLessThanOrEqualTo((Double) m.get("totalMs"));
        Result tdx = withoutKvm(null, "migrate", "--demo", "--json", "--memory", "16M", "--allocated", "90", "--owner", "tdx",
                "--write-rate", "0");
        assertThat(tdx.status()).as(tdx.err()).isZero();
        assertThat(json(tdx.out())).containsEntry("owner", "TDX").containsEntry("guestContinued", true);
        assertOneLineError(withoutKvm(null, "migrate", "--demo", "--owner", "x86"), "--owner x86", "sev-snp");
        assertOneLineError(withoutKvm(null, "migrate", "--demo", "--backing", "kernel"), "--backing kernel");
        assertOneLineError(withoutKvm(null, "migrate", "--memory-only"), "--demo");
        assertOneLineError(withoutKvm(null, "migrate", "--demo", "--write-rate", "-1"), "--write-rate -1");
    }

    /** The cases of issue 12: each error one line naming the file, the errno or the limit. */
    @Test
    void errorsNameTheFileAndTheCause(@TempDir Path dir) throws Exception {
        Result missing = gmem(null, "map", "/nonexistent.gmem");
        assertOneLineError(missing, "/nonexistent.gmem", "no such file", "ENOENT");
        Result directory = gmem(null, "script", "/tmp");
        assertOneLineError(directory, "/tmp", "EISDIR");
        Result svg = gmem(null, "map", "--svg", "/nonexistent/dir/x.svg");
        assertOneLineError(svg, "/nonexistent/dir/x.svg", "ENOENT");
        assertThat(svg.out()).as("refused before drawing").isEmpty();
        Result svgIsDirectory = gmem(null, "map", "--svg", dir.toString());
        assertOneLineError(svgIsDirectory, dir.toString(), "EISDIR");
        for (String size : List.of("1T", "2G", "99999999999G")) {
            Result memory = withoutKvm(null, "migrate", "--demo", "--memory", size);
            assertThat(memory.status()).isEqualTo(2);
            assertThat(memory.err().lines().findFirst().orElseThrow()).startsWith("gmem: ")
                    .containsAnyOf("over the limit of 1 GiB", "over 2^63 bytes").doesNotContain("not a size");
        }
        Result notASize = withoutKvm(null, "snapshot", "--memory", "lots");
        assertThat(notASize.err()).contains("'lots' is not a size");
        Result noFile = gmem(null, "snapshot", "verify", dir.resolve("none.gsnap").toString());
        assertOneLineError(noFile, "snapshot file", "none.gsnap", "ENOENT");
    }

    /** migrate, snapshot and restore check their arguments and files before they ask for KVM. */
    @Test
    void argumentsAndFilesAreCheckedBeforeTheHost(@TempDir Path dir) throws Exception {
        assertOneLineError(withoutKvm(null, "restore", dir.resolve("none.gsnap").toString()), "none.gsnap", "ENOENT");
        Path file = dir.resolve("some.gsnap");
        Files.write(file, new byte[100]);
        assertOneLineError(withoutKvm(null, "restore", file.toString()), "key file", "some.gsnap.key", "ENOENT");
        Files.write(dir.resolve("some.gsnap.key"), new byte[5]);
        assertOneLineError(withoutKvm(null, "restore", file.toString()), "not a snapshot key", "32 bytes");
        assertOneLineError(withoutKvm(null, "snapshot", "/nonexistent/dir/x.gsnap"), "/nonexistent/dir", "ENOENT");
        assertOneLineError(withoutKvm(null, "migrate", "--to", "nowhere"), "--to nowhere", "HOST:PORT");
        assertOneLineError(withoutKvm(null, "migrate"), "--demo");
        assertOneLineError(withoutKvm(null, "migrate", "--demo", "--allocated", "101"), "--allocated 101");
        // Arguments right: now the host is asked, and says why there is no KVM.
        Files.write(dir.resolve("some.gsnap.key"), new byte[32]);
        // (migrate --demo no longer needs KVM: without it, it moves a guest memory file alone.)
        for (String[] args : new String[][] {{"restore", file.toString()}, {"snapshot", dir.resolve("new.gsnap").toString()}}) {
            Result r = withoutKvm(null, args);
            assertOneLineError(r, args[0], "needs /dev/kvm", NO_KVM);
        }
        assertThat(dir.resolve("new.gsnap")).as("nothing written without a guest").doesNotExist();
    }

    /** Under --json, an error is one JSON object on standard output: its words, its errno. */
    @Test
    void underJsonAnErrorIsAJsonObject(@TempDir Path dir) throws Exception {
        Result missing = withoutKvm(null, "restore", dir.resolve("none.gsnap").toString(), "--json");
        assertThat(missing.status()).isNotZero();
        Map<String, Object> error = json(missing.out());
        assertThat(error).containsOnlyKeys("error", "errno", "errnoNumber");
        assertThat(error.get("errno")).isEqualTo("ENOENT");
        assertThat(error.get("errnoNumber")).isEqualTo(2L);
        assertThat((String) error.get("error")).contains("none.gsnap");
        Result noKvm = withoutKvm(null, "snapshot", dir.resolve("x.gsnap").toString(), "--json");
        assertThat(noKvm.status()).isNotZero();
        assertThat(json(noKvm.out()).get("errno")).isEqualTo("ENODEV");
        Result usage = withoutKvm(null, "info", "--json", "--no-such-option");
        assertThat(usage.status()).isEqualTo(2);
        assertThat(json(usage.out())).containsEntry("errno", "EINVAL").containsKey("error");
        Result limit = withoutKvm(null, "snapshot", "--memory", "1T", "--json");
        assertThat(limit.status()).isEqualTo(2);
        assertThat((String) json(limit.out()).get("error")).contains("over the limit of 1 GiB");
    }

    @Test
    void scriptArgumentsAreCheckedAndRefusalsSayWhy() throws Exception {
        Result byteTooWide = gmem("create 0x10000 mmap init_shared\nmmap 0 0x10000\nwrite 1 0 0x1000 1ff\nread 1 0 1\n", "script", "-");
        assertThat(byteTooWide.status()).isEqualTo(2);
        assertThat(byteTooWide.out()).isEqualTo("ok\nok\nerr EINVAL\ndata 00*1\n");
        assertThat(byteTooWide.err()).contains("line 3", "'1ff' is not a byte");
        Result negative = gmem("create 0x10000 mmap init_shared\nmmap 0 0x10000\nread 1 0 -5\nwrite 1 0 -5 aa\nread 1 -1 1\n", "script", "-");
        assertThat(negative.out()).isEqualTo("ok\nok\nerr EINVAL\nerr EINVAL\nfault\n");
        assertThat(negative.err()).contains("line 3: read: length -5 is negative", "line 4: write: length -5 is negative");
        Result kernel = withoutKvm("create 0x10000 mmap backing=kernel\nstat\n", "script", "-");
        assertThat(kernel.out()).as("stdout keeps its format").isEqualTo("err ENODEV\nerr EBADF\n");
        assertThat(kernel.err()).contains("line 1:", "ENODEV", NO_KVM);
        assertThat(kernel.status()).isZero();
    }

    /** Runs on every host: a snapshot stream made by the library, checked by gmem without KVM. */
    @Test
    @SuppressWarnings("unchecked")
    void snapshotVerifyChecksAFileAndSaysWhatItHoldsWithoutKvm(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("made.gsnap");
        Path key = dir.resolve("made.gsnap.key");
        byte[] keyBytes = new byte[32];
        new java.security.SecureRandom().nextBytes(keyBytes);
        Files.write(key, keyBytes);
        Files.write(file, SnapshotStreams.counterGuest(new javax.crypto.spec.SecretKeySpec(keyBytes, "AES")));

        Result r = withoutKvm(null, "snapshot", "verify", file.toString(), "--json");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> v = json(r.out());
        assertThat(v.get("valid")).isEqualTo(true);
        assertThat(v.get("memoryBytes")).isEqualTo(SnapshotStreams.MEMORY);
        assertThat(v.get("rounds")).isEqualTo(1L);
        assertThat(v.get("ownerStates")).isEqualTo(2L);
        Map<String, Object> pages = (Map<String, Object>) v.get("pages");
        assertThat(pages).containsEntry("total", SnapshotStreams.MEMORY / 4096).containsEntry("shared", 3L)
                .containsEntry("private", 2L).containsEntry("privateHoles", 1L).containsEntry("unrecorded", 0L)
                .containsEntry("sharedHoles", SnapshotStreams.MEMORY / 4096 - 6);
        Map<String, Object> bytes = (Map<String, Object>) v.get("bytes");
        assertThat(bytes).containsEntry("shared", 3 * 4096L).containsEntry("private", 2 * 4096L);
        Map<String, Object> machine = (Map<String, Object>) v.get("machine");
        assertThat(machine).containsEntry("program", "counter").containsEntry("backing", "memfd").containsEntry("vcpus", 1L);

        Result text = withoutKvm(null, "snapshot", "verify", file.toString());
        assertThat(text.status()).isZero();
        assertThat(text.out()).contains("a whole snapshot", "the counter guest", "3 shared and 2 private hold memory", "rounds        1")
                .doesNotContain("poisoned ");
        assertThat(pages).containsEntry("poisoned", 0L);

        // A page that failed at the source travels as a mark: verify counts it, among the holes too.
        Path failed = dir.resolve("failed.gsnap");
        Files.write(failed, SnapshotStreams.counterGuest(new javax.crypto.spec.SecretKeySpec(keyBytes, "AES"), true));
        Result withFailure = withoutKvm(null, "snapshot", "verify", failed.toString(), "--key", key.toString(), "--json");
        assertThat(withFailure.status()).as(withFailure.err()).isZero();
        assertThat((Map<String, Object>) json(withFailure.out()).get("pages")).containsEntry("poisoned", 1L)
                .containsEntry("shared", 2L).containsEntry("sharedHoles", SnapshotStreams.MEMORY / 4096 - 5);
        Result failedText = withoutKvm(null, "snapshot", "verify", failed.toString(), "--key", key.toString());
        assertThat(failedText.out()).contains("poisoned      1 page failed at the source");

        byte[] good = Files.readAllBytes(file);
        byte[] flipped = good.clone();
        flipped[SnapshotStreams.indexOfSharedByte(good)] ^= 1;
        Path altered = dir.resolve("altered.gsnap");
        Files.write(altered, flipped);
        Path cut = dir.resolve("cut.gsnap");
        Files.write(cut, java.util.Arrays.copyOf(good, good.length - 7));
        for (Path bad : List.of(altered, cut)) {
            Result refused = withoutKvm(null, "snapshot", "verify", bad.toString(), "--key", key.toString());
            assertOneLineError(refused, bad.toString(), "EBADMSG");
            assertThat(refused.out()).isEmpty();
        }
        Path other = dir.resolve("other.key");
        Files.write(other, new byte[32]);
        assertOneLineError(withoutKvm(null, "snapshot", "verify", file.toString(), "--key", other.toString()), "EBADMSG", "wrong key");
        Result json = withoutKvm(null, "snapshot", "verify", altered.toString(), "--key", key.toString(), "--json");
        assertThat(json.status()).isNotZero();
        assertThat(json(json.out())).containsEntry("errno", "EBADMSG").containsEntry("errnoNumber", 74L);
        Files.write(other, new byte[31]);
        assertOneLineError(withoutKvm(null, "snapshot", "verify", file.toString(), "--key", other.toString()), "not a snapshot key");
    }

    /** Runs on every host: restore --lazy needs no KVM, times itself next to the eager restore, and refuses a bad file. */
    @Test
    void lazyRestoreReportsItsTimesBesideTheEagerOneWithoutKvm(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("lazy.gsnap");
        Path key = dir.resolve("lazy.gsnap.key");
        byte[] keyBytes = new byte[32];
        new java.security.SecureRandom().nextBytes(keyBytes);
        Files.write(key, keyBytes);
        Files.write(file, SnapshotStreams.counterGuest(new javax.crypto.spec.SecretKeySpec(keyBytes, "AES")));

        Result r = withoutKvm(null, "restore", "--lazy", file.toString(), "--json", "--touch", "20");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> v = json(r.out());
        assertThat(v).containsKeys("firstAccessMs", "residentMs", "eagerMs", "faults", "faultP99Us");
        assertThat(v.get("memoryBytes")).isEqualTo(SnapshotStreams.MEMORY);
        assertThat(v.get("allocatedBytes")).isEqualTo(5 * 4096L);
        assertThat(v.get("lazy")).isEqualTo(true);

        Result text = withoutKvm(null, "restore", "--lazy", file.toString());
        assertThat(text.status()).as(text.err()).isZero();
        assertThat(text.out()).contains("eager restore", "first access after", "all resident after");

        byte[] flipped = Files.readAllBytes(file);
        flipped[SnapshotStreams.indexOfSharedByte(flipped)] ^= 1;
        Path altered = dir.resolve("altered.gsnap");
        Files.write(altered, flipped);
        assertOneLineError(withoutKvm(null, "restore", "--lazy", altered.toString(), "--key", key.toString()), "EBADMSG");
        assertOneLineError(withoutKvm(null, "restore", "--lazy", file.toString(), "--touch", "-1"), "--touch");
        // Huge pages: this file is no whole huge page (EINVAL), or the host has no pool (ENODEV); said in one line.
        assertOneLineError(withoutKvm(null, "restore", "--lazy", file.toString(), "--backing", "hugetlb_2m"), "--backing hugetlb_2m");
        assertOneLineError(withoutKvm(null, "restore", file.toString(), "--backing", "hugetlb_2m"), "--backing goes with --lazy");
    }

    /** Runs on every host: restore --lazy - reads the snapshot from a pipe on standard input, and refuses an altered one. */
    @Test
    void lazyRestoreFromStandardInput(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("lazy.gsnap");
        Path key = dir.resolve("lazy.gsnap.key");
        byte[] keyBytes = new byte[32];
        new java.security.SecureRandom().nextBytes(keyBytes);
        Files.write(key, keyBytes);
        byte[] stream = SnapshotStreams.counterGuest(new javax.crypto.spec.SecretKeySpec(keyBytes, "AES"));
        Files.write(file, stream);
        Result r = piped(file, "restore", "--lazy", "-", "--key", key.toString(), "--json", "--touch", "20");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> v = json(r.out());
        assertThat(v).containsKeys("openMs", "firstAccessMs", "residentMs", "completeMs", "faults", "faultP99Us");
        assertThat(v.get("memoryBytes")).isEqualTo(SnapshotStreams.MEMORY);
        assertThat(v.get("allocatedBytes")).isEqualTo(5 * 4096L);

        byte[] flipped = stream.clone();
        flipped[SnapshotStreams.indexOfSharedByte(flipped)] ^= 1;
        Path altered = dir.resolve("altered.gsnap");
        Files.write(altered, flipped);
        assertOneLineError(piped(altered, "restore", "--lazy", "-", "--key", key.toString()), "EBADMSG");
        assertOneLineError(piped(file, "restore", "--lazy", "-"), "--key");
    }

    /** Runs ./gmem without KVM with {@code input} on its standard input, through a real pipe. */
    private static Result piped(Path input, String... args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>();
        command.add(ROOT.resolve("gmem").toString());
        command.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(command).directory(ROOT.toFile());
        pb.environment().put("GMEM_SKIP_BUILD", "1");
        pb.environment().put(NO_KVM, "1");
        Path out = Files.createTempFile("gmem", ".out");
        Path err = Files.createTempFile("gmem", ".err");
        pb.redirectOutput(out.toFile()).redirectError(err.toFile());
        Process p = pb.start();
        try (var to = p.getOutputStream()) {
            Files.copy(input, to);
        } catch (IOException closedEarly) {
            // gmem refused before reading all of it: its status says why
        }
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).as("gmem %s finished", String.join(" ", args)).isTrue();
        Result r = new Result(p.exitValue(), Files.readString(out), Files.readString(err));
        Files.delete(out);
        Files.delete(err);
        return r;
    }

    /**
     * Where KVM is present, restore --lazy of a saved guest runs it at once on memory still
     * arriving: the same fields as for memory alone, its count carried on from the eager load's,
     * its memory equal to the eager load's; without KVM the same file restores as memory alone.
     */
    @Test
    void lazyRestoreOfASavedGuestRunsItAndChecksItsMemory(@TempDir Path dir) throws Exception {
        assumeKvm("running a saved guest on lazily restored memory");
        Path file = dir.resolve("guest.gsnap");
        Result saved = gmem(null, "snapshot", file.toString(), "--json", "--memory", "32M", "--allocated", "50");
        assertThat(saved.status()).as(saved.err()).isZero();
        Result r = gmem(null, "restore", "--lazy", file.toString(), "--json", "--run-ms", "200");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> v = json(r.out());
        assertThat(v).containsKeys("firstAccessMs", "residentMs", "eagerMs", "faults", "faultP99Us");
        assertThat(v).containsEntry("guest", true).containsEntry("backing", "memfd").containsEntry("lazy", true)
                .containsEntry("guestContinued", true).containsEntry("pagesDiffering", 0L);
        assertThat(v.get("firstTick")).as("the saved count plus one").isEqualTo((Long) json(saved.out()).get("lastTick") + 1);

        Result text = gmem(null, "restore", "--lazy", file.toString(), "--run-ms", "100");
        assertThat(text.status()).as(text.err()).isZero();
        assertThat(text.out()).contains("the guest's first exit after", "its count came through");

        Result memoryOnly = withoutKvm(null, "restore", "--lazy", file.toString(), "--json", "--touch", "5");
        assertThat(memoryOnly.status()).as(memoryOnly.err()).isZero();
        assertThat(json(memoryOnly.out())).containsEntry("guest", false);
        assertThat((String) json(memoryOnly.out()).get("guestReason")).contains("no KVM");

        byte[] flipped = Files.readAllBytes(file);
        flipped[flipped.length / 2] ^= 1;
        Path altered = dir.resolve("altered.gsnap");
        Files.write(altered, flipped);
        assertOneLineError(gmem(null, "restore", "--lazy", altered.toString(), "--key", dir.resolve("guest.gsnap.key").toString()),
                "EBADMSG");
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
        assertThat(verbose.err()).as("--verbose keeps the trace").contains("/no/such/script", "ENOENT", "\tat ");
        Result malformed = gmem("frobnicate 1 2\n", "script", "-");
        assertThat(malformed.status()).isEqualTo(2);
        assertThat(malformed.out()).isEqualTo("err EINVAL\n");
        assertThat(malformed.err()).contains("line 1: unknown command 'frobnicate'");
    }
}
