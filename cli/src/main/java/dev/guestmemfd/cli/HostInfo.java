package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.HugePagePool;
import dev.guestmemfd.kvm.Capabilities;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.KvmException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What this host offers to guest memory, and what the library will use here and why. It asks
 * the library (which backings, and why not) and the KVM owner (whether {@code /dev/kvm} is
 * usable, and why not; its capabilities): it calls no native code of its own.
 *
 * @param kvmError  why KVM cannot be used here, or null when it can
 * @param backings  each backing's reason to be unavailable here, empty when it is available
 */
record HostInfo(String kernel, boolean kvm, Capabilities capabilities, String kvmError,
                Map<Backing, Optional<String>> backings, String thpAnonymous, String thpShmem, long hugePages) {

    /** What works on a host without KVM: everything but running guests. */
    static final List<String> WORKS_WITHOUT_KVM = List.of(
            "the library: files, conversions, host mappings, leases and pins",
            "the MEMFD and SECRET backings (where listed as available)",
            "the architecture models (SEV-SNP, TDX, pKVM, CCA, Gunyah) as owners",
            "snapshot streams, and `gmem snapshot verify` on a snapshot file",
            "`gmem script`, `gmem map`, and the library part of `gmem demo` and `gmem bench`");

    /** What needs KVM. */
    static final List<String> NEEDS_KVM = List.of(
            "the KERNEL backing (the kernel's guest_memfd)", "running guests: the demo's guest, `gmem migrate`,"
                    + " `gmem snapshot` (to take one) and `gmem restore`", "the guest part of `gmem bench`");

    static HostInfo probe() {
        Capabilities caps = null;
        String kvmError = Kvm.unavailableReason().orElse(null);
        boolean kvm = kvmError == null;
        if (kvm) {
            try (Kvm k = Kvm.open()) {
                caps = k.capabilities();
            } catch (KvmException e) {
                kvm = false;
                kvmError = e.getMessage();
            }
        }
        Map<Backing, Optional<String>> backings = new EnumMap<>(Backing.class);
        for (Backing b : Backing.values()) {
            backings.put(b, b.unavailableReason());
        }
        return new HostInfo(read("/proc/sys/kernel/osrelease"), kvm, caps, kvmError, backings,
                selected(read("/sys/kernel/mm/transparent_hugepage/enabled")),
                selected(read("/sys/kernel/mm/transparent_hugepage/shmem_enabled")), readHugePages());
    }

    private static String read(String path) {
        try {
            return Files.readString(Path.of(path)).trim();
        } catch (IOException e) {
            return "unknown";
        }
    }

    private static String selected(String options) {
        Matcher m = Pattern.compile("\\[(\\w+)]").matcher(options);
        return m.find() ? m.group(1) : options;
    }

    private static long readHugePages() {
        Matcher m = Pattern.compile("HugePages_Total:\\s+(\\d+)").matcher(read("/proc/meminfo"));
        return m.find() ? Long.parseLong(m.group(1)) : 0;
    }

    /** {@return true when the kernel's guest_memfd can back the library here} */
    boolean kernelGuestMemfd() {
        return kvm && backings.get(Backing.KERNEL).isEmpty();
    }

    /** {@return the backing a guest uses here unless told: the kernel's guest_memfd where there is one} */
    Backing preferredBacking() {
        return kernelGuestMemfd() ? Backing.KERNEL : Backing.MEMFD;
    }

    String backingReason() {
        if (kernelGuestMemfd()) {
            return "the kernel's guest_memfd: KVM has it with MMAP and INIT_SHARED, so KVM binds the file directly";
        }
        if (kvm) {
            return "a memfd with ordinary memslots: this KVM's guest_memfd cannot be used ("
                    + backings.get(Backing.KERNEL).orElse("") + ")";
        }
        return "a memfd: there is no KVM here";
    }

    String conversionPath() {
        if (kvm && capabilities.kernelPrivateMemory()) {
            return "the kernel and the library: KVM keeps pages private (KVM_SET_MEMORY_ATTRIBUTES), the library keeps the host out";
        }
        if (!kvm) {
            return "the library alone: it keeps the host out of private pages (no guest runs here)";
        }
        return "the library alone: this kernel keeps no private memory (KVM_CAP_MEMORY_ATTRIBUTES = "
                + capabilities.memoryAttributes() + "), so the library enforces the host side and the guest can reach every page";
    }

    /**
     * {@return who converts the pages of a KERNEL-backed file here: "kernel" where its VM
     * reports KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES (the in-place conversion series), else
     * "library"; null without the KERNEL backing} Asked of a one-page file, as the library
     * creates them.
     */
    String kernelBackingConversion() {
        if (!kernelGuestMemfd()) {
            return null;
        }
        try (dev.guestmemfd.GuestMemory probe = dev.guestmemfd.GuestMemory.create(dev.guestmemfd.GuestMemory.PAGE_SIZE,
                dev.guestmemfd.Flag.MMAP.bit() | dev.guestmemfd.Flag.INIT_SHARED.bit(), Backing.KERNEL)) {
            return probe.kernelConverts() ? "kernel" : "library";
        }
    }

    String kernelBackingConversionReason() {
        String who = kernelBackingConversion();
        if (who == null) {
            return "no KERNEL backing here";
        }
        return who.equals("kernel")
                ? "the kernel's own KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd, the library's rules checked first"
                : "the library's: this kernel does not report KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES ("
                        + "capability 250) for the library's VMs";
    }

    String guestRequests() {
        return kvm ? "port-I/O doorbell 0x510 (works on every KVM host); KVM_HC_MAP_GPA_RANGE through KVM_CAP_EXIT_HYPERCALL = 0x"
                + Long.toHexString(capabilities.exitHypercall()) + " where the exit comes" : "none: no guest runs without KVM";
    }

    /**
     * {@return how a migration moves memory on each backing here, asked of KVM with a small VM}
     * Pre-copy needs the kernel to log dirty pages of the memslot.
     */
    Map<String, String> migrationPaths() {
        Map<String, String> paths = new LinkedHashMap<>();
        if (!kvm) {
            return paths;
        }
        try (Kvm k = Kvm.open()) {
            for (Backing b : Backing.available()) {
                String refusal = dev.guestmemfd.kvm.Migration.dirtyLoggingRefusal(k, b);
                paths.put(name(b), refusal == null ? "pre-copy (the memslot logs dirty pages)" : "stop-and-copy (" + refusal + ")");
            }
        }
        return paths;
    }

    private static String name(Backing b) {
        return b.name().toLowerCase(Locale.ROOT);
    }

    Map<String, Object> toJson() {
        Map<String, Object> kvmJson = new LinkedHashMap<>();
        kvmJson.put("available", kvm);
        if (kvm) {
            kvmJson.put("apiVersion", capabilities.apiVersion());
            kvmJson.put("guestMemfd", capabilities.guestMemfd());
            kvmJson.put("guestMemfdFlags", capabilities.guestMemfdFlags());
            kvmJson.put("vmTypes", capabilities.vmTypes());
            kvmJson.put("memoryAttributes", capabilities.memoryAttributes());
            kvmJson.put("exitHypercall", capabilities.exitHypercall());
        } else {
            kvmJson.put("reason", kvmError);
            kvmJson.put("stillWorks", WORKS_WITHOUT_KVM);
            kvmJson.put("needsKvm", NEEDS_KVM);
        }
        Map<String, Object> backingJson = new LinkedHashMap<>();
        backings.forEach((b, reason) -> {
            Map<String, Object> one = new LinkedHashMap<>();
            one.put("available", reason.isEmpty());
            one.put("reason", reason.orElse(null));
            backingJson.put(name(b), one);
        });
        Map<String, Object> json = new LinkedHashMap<>();
        json.put("kernel", kernel);
        json.put("kvm", kvmJson);
        json.put("backings", backingJson);
        json.put("memfdSecret", backings.get(Backing.SECRET).map(r -> "no (" + r + ")").orElse("yes"));
        json.put("transparentHugePages", Map.of("anonymous", thpAnonymous, "shmem", thpShmem));
        json.put("hugetlbPages", hugePages);
        json.put("hugetlbPools", hugetlbPools());
        json.put("numaNodes", numaNodes());
        json.put("backing", name(preferredBacking()));
        json.put("backingReason", backingReason());
        json.put("conversionPath", conversionPath());
        json.put("kernelBackingConversion", kernelBackingConversion());
        json.put("guestRequests", guestRequests());
        json.put("migration", migrationPaths());
        return json;
    }

    /** {@return each huge page pool of this host, as read now: size, total, free, reserved, surplus} */
    private static List<Object> hugetlbPools() {
        List<Object> pools = new ArrayList<>();
        for (HugePagePool pool : HugePagePool.all()) {
            Map<String, Object> one = new LinkedHashMap<>();
            one.put("pageSize", pool.pageSize());
            one.put("total", pool.total());
            one.put("free", pool.free());
            one.put("reserved", pool.reserved());
            one.put("surplus", pool.surplus());
            pools.add(one);
        }
        return pools;
    }

    /** {@return each NUMA node of this host, as read now: number, CPUs, memory, free memory} */
    private static List<Object> numaNodes() {
        List<Object> nodes = new ArrayList<>();
        for (NumaNode n : NumaNode.read(NumaNode.SYSFS)) {
            Map<String, Object> one = new LinkedHashMap<>();
            one.put("node", (long) n.node());
            one.put("cpus", n.cpus());
            one.put("memoryBytes", n.memoryBytes());
            one.put("freeBytes", n.freeBytes());
            nodes.add(one);
        }
        return nodes;
    }

    String toText() {
        StringBuilder out = new StringBuilder();
        out.append("kernel              ").append(kernel).append('\n');
        if (kvm) {
            out.append("/dev/kvm            yes, API version ").append(capabilities.apiVersion()).append('\n');
            out.append("guest_memfd         ").append(capabilities.guestMemfd() ? "yes" : "no")
                    .append(", flags 0x").append(Long.toHexString(capabilities.guestMemfdFlags()))
                    .append(flagNames(capabilities.guestMemfdFlags())).append('\n');
            out.append("VM types            0x").append(Long.toHexString(capabilities.vmTypes()))
                    .append(capabilities.vmTypes() == 1 ? " (only the default type: no SEV-SNP or TDX VMs)" : "").append('\n');
            out.append("memory attributes   0x").append(Long.toHexString(capabilities.memoryAttributes()))
                    .append(capabilities.kernelPrivateMemory() ? " (the kernel keeps private pages)" : " (none: the kernel keeps no private pages)")
                    .append('\n');
        } else {
            out.append(Gmem.wrap("/dev/kvm            ", "no: " + kvmError, 100));
        }
        backings.forEach((b, reason) -> out.append(Gmem.wrap(String.format(Locale.ROOT, "backing %-11s ", name(b)),
                reason.map(r -> "no: " + r).orElse("yes"), 100)));
        out.append("huge pages          THP ").append(thpAnonymous).append(" (anonymous), ").append(thpShmem)
                .append(" (shmem); hugetlb pages reserved: ").append(hugePages).append('\n');
        for (HugePagePool pool : HugePagePool.all()) {
            out.append(String.format(Locale.ROOT, "hugetlb pool %-6s %d pages, %d free, %d reserved, %d surplus%n",
                    MemoryMapView.human(pool.pageSize()), pool.total(), pool.free(), pool.reserved(), pool.surplus()));
        }
        List<NumaNode> nodes = NumaNode.read(NumaNode.SYSFS);
        if (nodes.isEmpty()) {
            out.append("NUMA nodes          none listed (").append(NumaNode.SYSFS).append(" is absent)\n");
        }
        for (NumaNode n : nodes) {
            out.append(String.format(Locale.ROOT, "NUMA node %-9d CPUs %s, %s of memory, %s free%s%n", n.node(),
                    n.cpus().isEmpty() ? "none" : n.cpus(), NumaNode.approx(n.memoryBytes()),
                    NumaNode.approx(n.freeBytes()), n.hasMemory() ? "" : " (no memory: no policy can name it)"));
        }
        out.append('\n');
        out.append("backing             ").append(backingReason()).append('\n');
        out.append("private pages       ").append(conversionPath()).append('\n');
        out.append(Gmem.wrap("conversion (kernel) ", kernelBackingConversionReason(), 100));
        out.append("guest requests      ").append(guestRequests()).append('\n');
        migrationPaths().forEach((backing, path) ->
                out.append(String.format(Locale.ROOT, "migration %-9s %s%n", backing, path)));
        if (!kvm) {
            out.append('\n').append("without KVM, these still work:\n");
            WORKS_WITHOUT_KVM.forEach(w -> out.append("  - ").append(w).append('\n'));
            out.append("these need KVM:\n");
            NEEDS_KVM.forEach(w -> out.append("  - ").append(w).append('\n'));
        }
        return out.toString();
    }

    private static String flagNames(long flags) {
        List<String> names = new ArrayList<>();
        if ((flags & 1) != 0) {
            names.add("MMAP");
        }
        if ((flags & 2) != 0) {
            names.add("INIT_SHARED");
        }
        if ((flags & 4) != 0) {
            names.add("NO_DIRECT_MAP");
        }
        return names.isEmpty() ? "" : " (" + String.join(" ", names) + ")";
    }
}
