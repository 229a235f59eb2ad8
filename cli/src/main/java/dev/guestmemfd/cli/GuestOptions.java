package dev.guestmemfd.cli;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.Content;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.kvm.GuestLayout;
import dev.guestmemfd.kvm.GuestProgram;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Machine;
import java.util.Locale;
import java.util.SplittableRandom;
import picocli.CommandLine;
import picocli.CommandLine.Option;

/**
 * The guest that migrate and snapshot move: the counting guest, on a memory of a chosen size
 * of which the host fills a chosen share with data before it starts, so that a migration's
 * figures can be taken for a guest with that much memory in use.
 */
final class GuestOptions {
    /** Page tables, code, stacks and vCPU 0's region: the fill starts above them. */
    static final long GUEST_USES = GuestLayout.memoryFor(1);
    /** The guest's page tables identity-map the first GiB. */
    static final long MAX_MEMORY = 1L << 30;
    /** The guest's own pages, with room to spare. */
    static final long MIN_MEMORY = 16L << 20;

    @Option(names = "--memory", defaultValue = "64M", converter = SizeConverter.class,
            description = "Guest memory, 16M to 1G in 2M steps (default: ${DEFAULT-VALUE}).")
    long memory;

    @Option(names = "--allocated", defaultValue = "0",
            description = "Percent of the memory the host fills with data before the guest starts, the first half"
                    + " of it then made private (default: ${DEFAULT-VALUE}).")
    int allocatedPercent;

    @Option(names = "--backing", description = "Force a backing: ${COMPLETION-CANDIDATES} (default: the best this host has).")
    Backing backing;

    /**
     * Checks the options against their limits, before anything is asked of the host.
     *
     * @throws Failure EINVAL naming the option, its value and the limit
     */
    void check() {
        if (memory < MIN_MEMORY || memory > MAX_MEMORY || memory % (2L << 20) != 0) {
            throw Failure.usage("--memory " + MemoryMapView.human(memory) + ": "
                    + (memory > MAX_MEMORY ? "over the limit of 1 GiB (the guest's page tables map the first GiB)"
                    : memory < MIN_MEMORY ? "under the least, 16 MiB (the guest's code, page tables and stacks)"
                    : "not a multiple of 2 MiB (the guest maps its memory in 2 MiB pages)"));
        }
        if (allocatedPercent < 0 || allocatedPercent > 100) {
            throw Failure.usage("--allocated " + allocatedPercent + ": a percentage is 0 to 100");
        }
    }

    /**
     * {@return the counting guest's configuration} Call after {@link #check()} and after making
     * sure there is KVM: the backing asked for must be one this host offers.
     *
     * @throws Failure ENODEV when {@code --backing} names a backing this host does not offer, with the reason
     */
    Machine.Config config(HostInfo host) {
        return Machine.Config.of(GuestProgram.COUNTER, backing(backing, host), 1).withMemorySize(memory);
    }

    /**
     * {@return {@code asked} when this host offers it, or the host's preferred backing when none was asked}
     * An unavailable backing is refused, never replaced by another.
     *
     * @throws Failure ENODEV naming the backing and why this host lacks it
     */
    static Backing backing(Backing asked, HostInfo host) {
        if (asked == null) {
            return host.preferredBacking();
        }
        requireAvailable(asked);
        return asked;
    }

    /** @throws Failure ENODEV naming the backing and why this host lacks it */
    static void requireAvailable(Backing backing) {
        backing.unavailableReason().ifPresent(reason -> {
            throw new Failure(Errno.ENODEV, "--backing " + name(backing) + ": this host does not offer it: " + reason);
        });
    }

    /**
     * @throws Failure ENODEV saying what needs KVM and why this host has none
     */
    static void requireKvm(String what) {
        Kvm.unavailableReason().ifPresent(reason -> {
            throw new Failure(Errno.ENODEV, what + " needs /dev/kvm, which this process cannot use: " + reason);
        });
    }

    /** {@return the bytes {@link #fill} fills: the share asked for, at most what the guest leaves free} */
    long fillBytes() {
        long wanted = memory / 100 * allocatedPercent / GuestMemory.PAGE_SIZE * GuestMemory.PAGE_SIZE;
        return Math.min(wanted, memory - GUEST_USES);
    }

    /**
     * Fills the top {@link #fillBytes()} of the machine's memory with data that does not
     * compress, written by the host while the pages are shared, then makes the first half
     * private with its contents kept.
     */
    void fill(Machine machine) {
        fill(machine, null);
    }

    /**
     * As {@link #fill(Machine)}, the pages made private holding {@code privatePattern}
     * repeated instead, when it is not null: a text a test can look for on the wire.
     */
    void fill(Machine machine, byte[] privatePattern) {
        long bytes = fillBytes();
        if (bytes == 0) {
            return;
        }
        long start = memory - bytes;
        long half = bytes / 2 / GuestMemory.PAGE_SIZE * GuestMemory.PAGE_SIZE;
        HostMapping host = machine.hostMapping();
        byte[] chunk = new byte[1 << 20];
        SplittableRandom random = new SplittableRandom(bytes);
        try (ProgressBar bar = ProgressBar.onTerminal("filling ", bytes)) {
            for (long at = start; at < memory; ) {
                long end = privatePattern != null && at < start + half ? start + half : memory;
                int n = (int) Math.min(chunk.length, end - at);
                if (privatePattern != null && at < start + half) {
                    for (int i = 0; i < n; i++) {
                        chunk[i] = privatePattern[(int) ((at - start + i) % privatePattern.length)];
                    }
                } else {
                    random.nextBytes(chunk);
                }
                host.write(at, java.lang.foreign.MemorySegment.ofArray(chunk).asSlice(0, n));
                at += n;
                bar.update(at - start);
            }
        }
        if (half > 0) {
            machine.memory().convert(start, half, Attribute.PRIVATE, Content.PRESERVE);
        }
    }

    static String name(Backing backing) {
        return backing.name().toLowerCase(Locale.ROOT);
    }

    /** Reads sizes such as {@code 256M}, {@code 1G}, {@code 65536}. */
    static final class SizeConverter implements CommandLine.ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            String v = value.strip().toUpperCase(Locale.ROOT);
            long unit = switch (v.isEmpty() ? ' ' : v.charAt(v.length() - 1)) {
                case 'K' -> 1L << 10;
                case 'M' -> 1L << 20;
                case 'G' -> 1L << 30;
                case 'T' -> 1L << 40;
                case 'P' -> 1L << 50;
                default -> 1;
            };
            String digits = unit == 1 ? v : v.substring(0, v.length() - 1);
            if (!digits.matches("[0-9]+")) {
                throw new CommandLine.TypeConversionException("'" + value + "' is not a size: digits, then K, M, G or T (e.g. 256M, 1G)");
            }
            try {
                return Math.multiplyExact(Long.parseLong(digits), unit);
            } catch (NumberFormatException | ArithmeticException e) {
                throw new CommandLine.TypeConversionException("'" + value + "' is over 2^63 bytes, the largest size");
            }
        }
    }
}
