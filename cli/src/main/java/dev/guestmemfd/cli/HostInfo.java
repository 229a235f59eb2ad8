package dev.guestmemfd.cli;

import dev.guestmemfd.Backing;
import dev.guestmemfd.kvm.Capabilities;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.LinuxException;
import dev.guestmemfd.linux.Memfd;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** What this host offers to guest memory, and what the library will use here and why. */
record HostInfo(String kernel, boolean kvm, Capabilities capabilities, String kvmError, String memfdSecret,
                String thpAnonymous, String thpShmem, long hugePages) {

    static HostInfo probe() {
        Capabilities caps = null;
        String kvmError = null;
        boolean kvm = Kvm.available();
        if (kvm) {
            try (Kvm k = Kvm.open()) {
                caps = k.capabilities();
            } catch (RuntimeException e) {
                kvm = false;
                kvmError = e.getMessage();
            }
        } else {
            kvmError = Files.exists(Kvm.DEVICE) ? "/dev/kvm is not readable and writable by this user" : "no /dev/kvm";
        }
        String secret;
        try {
            Fd.close(Memfd.createSecret(Memfd.SECRET_CLOEXEC));
            secret = "yes";
        } catch (LinuxException e) {
            secret = "no (" + e.errnoName() + ")";
        }
        return new HostInfo(read("/proc/sys/kernel/osrelease"), kvm, caps, kvmError, secret,
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
        return kvm && capabilities.guestMemfd() && (capabilities.guestMemfdFlags() & 3) == 3;
    }

    /** {@return the backing the demo uses here} */
    Backing preferredBacking() {
        return kernelGuestMemfd() ? Backing.KERNEL : Backing.MEMFD;
    }

    String backingReason() {
        if (kernelGuestMemfd()) {
            return "the kernel's guest_memfd: KVM has it with MMAP and INIT_SHARED, so KVM binds the file directly";
        }
        if (kvm) {
            return "a memfd with ordinary memslots: this KVM's guest_memfd lacks MMAP/INIT_SHARED, which the library needs to map it";
        }
        return "a memfd: there is no KVM here";
    }

    String conversionPath() {
        if (kvm && capabilities.kernelPrivateMemory()) {
            return "the kernel and the library: KVM keeps pages private (KVM_SET_MEMORY_ATTRIBUTES), the library keeps the host out";
        }
        return "the library alone: this kernel keeps no private memory (KVM_CAP_MEMORY_ATTRIBUTES = "
                + (kvm ? capabilities.memoryAttributes() : 0)
                + "), so the library enforces the host side and the guest can reach every page";
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
        java.util.List<Backing> backings = new java.util.ArrayList<>(java.util.List.of(Backing.MEMFD));
        if (memfdSecret.equals("yes")) {
            backings.add(Backing.SECRET);
        }
        if (kernelGuestMemfd()) {
            backings.add(Backing.KERNEL);
        }
        try (Kvm k = Kvm.open()) {
            for (Backing b : backings) {
                String refusal = dev.guestmemfd.kvm.Migration.dirtyLoggingRefusal(k, b);
                paths.put(b.name().toLowerCase(java.util.Locale.ROOT),
                        refusal == null ? "pre-copy (the memslot logs dirty pages)" : "stop-and-copy (" + refusal + ")");
            }
        }
        return paths;
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
        }
        Map<String, Object> json = new LinkedHashMap<>();
        json.put("kernel", kernel);
        json.put("kvm", kvmJson);
        json.put("memfdSecret", memfdSecret);
        json.put("transparentHugePages", Map.of("anonymous", thpAnonymous, "shmem", thpShmem));
        json.put("hugetlbPages", hugePages);
        json.put("backing", preferredBacking().name().toLowerCase(java.util.Locale.ROOT));
        json.put("backingReason", backingReason());
        json.put("conversionPath", conversionPath());
        json.put("guestRequests", guestRequests());
        json.put("migration", migrationPaths());
        return json;
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
            out.append("/dev/kvm            no: ").append(kvmError).append('\n');
        }
        out.append("memfd_secret        ").append(memfdSecret).append('\n');
        out.append("huge pages          THP ").append(thpAnonymous).append(" (anonymous), ").append(thpShmem)
                .append(" (shmem); hugetlb pages reserved: ").append(hugePages).append('\n');
        out.append('\n');
        out.append("backing             ").append(backingReason()).append('\n');
        out.append("private pages       ").append(conversionPath()).append('\n');
        out.append("guest requests      ").append(guestRequests()).append('\n');
        migrationPaths().forEach((backing, path) ->
                out.append(String.format(java.util.Locale.ROOT, "migration %-9s %s%n", backing, path)));
        return out.toString();
    }

    private static String flagNames(long flags) {
        StringBuilder names = new StringBuilder();
        if ((flags & 1) != 0) {
            names.append(" MMAP");
        }
        if ((flags & 2) != 0) {
            names.append(" INIT_SHARED");
        }
        if ((flags & 4) != 0) {
            names.append(" NO_DIRECT_MAP");
        }
        return names.isEmpty() ? "" : " (" + names.toString().trim() + ")";
    }
}
