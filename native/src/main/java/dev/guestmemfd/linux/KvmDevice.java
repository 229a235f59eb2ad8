package dev.guestmemfd.linux;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/**
 * Whether this host offers {@code /dev/kvm}, and why not: the one place every layer asks.
 *
 * <p>The switch {@value #NO_KVM_SWITCH} (environment variable set to anything but empty or
 * {@code 0}, or the system property {@code gmem.noKvm=true}) makes this process behave exactly
 * as on a host without the device node, so the no-KVM path is tested on KVM hosts too.
 */
public final class KvmDevice {
    /** The device node. */
    public static final Path PATH = Path.of("/dev/kvm");
    /** The environment variable that hides {@code /dev/kvm} from this process. */
    public static final String NO_KVM_SWITCH = "GMEM_NO_KVM";

    private KvmDevice() {
    }

    /** {@return true when the switch hides {@code /dev/kvm} from this process} */
    public static boolean hiddenBySwitch() {
        String env = System.getenv(NO_KVM_SWITCH);
        return (env != null && !env.isEmpty() && !env.equals("0")) || Boolean.getBoolean("gmem.noKvm");
    }

    /** {@return why this process cannot use {@code /dev/kvm}, or empty when it can open it} */
    public static Optional<String> unavailableReason() {
        if (hiddenBySwitch()) {
            return Optional.of(NO_KVM_SWITCH + " is set: behaving as a host without /dev/kvm");
        }
        if (Files.isReadable(PATH) && Files.isWritable(PATH)) {
            return Optional.empty();
        }
        if (Files.exists(PATH)) {
            return Optional.of("/dev/kvm exists but this user cannot read and write it");
        }
        List<String> why = new ArrayList<>();
        why.add("no /dev/kvm device node");
        String flags = cpuFlags();
        if (flags != null && !flags.contains(" vmx") && !flags.contains(" svm")) {
            why.add("the CPU shows no vmx or svm flag (no hardware virtualization offered to this machine)");
        }
        hypervisor().ifPresent(h -> why.add("running as a guest of " + h));
        why.add(Files.isDirectory(Path.of("/sys/module/kvm")) ? "KVM is in the kernel" : "no KVM module loaded");
        return Optional.of(String.join("; ", why));
    }

    /** {@return true when this process can use {@code /dev/kvm}} */
    public static boolean available() {
        return unavailableReason().isEmpty();
    }

    /**
     * Opens {@code /dev/kvm} read-write, close-on-exec.
     *
     * @throws LinuxException {@code ENOENT} where there is no device node or the switch hides
     *                        it, {@code EACCES} without permission
     */
    public static int open() {
        if (hiddenBySwitch()) {
            throw new LinuxException(Errno.ENOENT.number(), "open(" + PATH + ") [hidden by " + NO_KVM_SWITCH + "]");
        }
        return Fd.open(PATH.toString(), Fd.O_RDWR | Fd.O_CLOEXEC);
    }

    /** {@return the hypervisor this machine runs under, as the firmware names it, if any} */
    public static Optional<String> hypervisor() {
        String flags = cpuFlags();
        if (flags == null || !flags.contains(" hypervisor")) {
            return Optional.empty();
        }
        for (String file : List.of("/sys/hypervisor/type", "/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/product_name")) {
            String value = read(file);
            if (value != null && !value.isBlank()) {
                return Optional.of(value.trim());
            }
        }
        return Optional.of("a hypervisor (the CPU says so; the firmware does not name it)");
    }

    /** The flags line of {@code /proc/cpuinfo}, with a leading space, or null. */
    private static String cpuFlags() {
        String info = read("/proc/cpuinfo");
        if (info == null) {
            return null;
        }
        for (String line : info.split("\n")) {
            if (line.startsWith("flags")) {
                return " " + line.substring(line.indexOf(':') + 1).trim().toLowerCase(Locale.ROOT) + " ";
            }
        }
        return null;
    }

    private static String read(String path) {
        try {
            return Files.readString(Path.of(path));
        } catch (IOException | SecurityException e) {
            return null;
        }
    }
}
