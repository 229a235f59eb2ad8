package dev.guestmemfd.kvm;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.migration.CarriedState;
import dev.guestmemfd.migration.CountingOutputStream;
import dev.guestmemfd.migration.FileDescription;
import dev.guestmemfd.migration.GuestActivity;
import dev.guestmemfd.migration.PostCopy;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.SecretKey;

/**
 * Post-copy of a running {@link Machine}: the machine side around {@link PostCopy}, which
 * moves the pages. The source pauses its vCPUs, sends the layout and the vCPU state (a
 * {@link CarriedState} whose kind names the machine's shape, so the destination builds the
 * same VM from the description); the destination gives the memory its layout, sets the vCPU
 * state and runs the guest at once, each page asked of the source when the guest first
 * touches it or when the pull reaches it.
 *
 * <p>If the channel breaks before the source released its copy, the destination's restore
 * fails: its vCPUs stop for good at once (the failure listener of {@link LazyMachineLoad}; a
 * vCPU at a page that cannot come leaves {@code KVM_RUN} there, the page poisoned), and the
 * source, which still holds every page, runs its guest again ({@link Machine#running()}).
 */
final class PostCopyMachine {
    /** How long either side waits for the other while pages remain. */
    static final Duration TIMEOUT = Duration.ofSeconds(60);
    private static final Pattern KIND = Pattern.compile(
            "kvm-machine program=([A-Z_]+) vcpus=([0-9]+) preallocate=(true|false) hypercalls=(true|false)");

    private PostCopyMachine() {
    }

    /** {@return the kind of the vCPU state of a machine so configured: the shape the destination builds} */
    static String kind(Machine.Config config) {
        return "kvm-machine program=" + config.program().name() + " vcpus=" + config.vcpus() + " preallocate="
                + config.preallocate() + " hypercalls=" + config.hypercalls();
    }

    /**
     * {@return the configuration the description names: its size, its one carried kind's shape,
     * and {@code backing}, or the source's backing when that is null}
     *
     * @throws GuestMemoryException {@code EBADMSG} when the description carries no machine's state
     */
    static Machine.Config config(FileDescription description, Backing backing) {
        Matcher m = description.carried().size() == 1 ? KIND.matcher(description.carried().getFirst()) : null;
        if (m == null || !m.matches()) {
            throw new GuestMemoryException(Errno.EBADMSG, "postCopy", "the source does not send a machine (it carries "
                    + description.carried() + ")", -1);
        }
        try {
            return new Machine.Config(backing != null ? backing : description.backing(), description.size(),
                    Integer.parseInt(m.group(2)), GuestProgram.valueOf(m.group(1)), Boolean.parseBoolean(m.group(3)),
                    Boolean.parseBoolean(m.group(4)));
        } catch (IllegalArgumentException e) {
            throw new GuestMemoryException(Errno.EBADMSG, "postCopy", "the machine's description does not read: "
                    + e.getMessage(), -1);
        }
    }

    /** The vCPU state of a machine, exported once its vCPUs paused, imported before they start. */
    private record VcpuState(Machine machine, String kind) implements CarriedState {
        @Override
        public byte[] exportState() {
            try {
                return MachineImage.vcpuState(machine);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        @Override
        public void importState(byte[] state) {
            try {
                MachineImage.restoreVcpus(machine, state);
            } catch (UncheckedIOException | KvmException e) {
                throw new IllegalArgumentException(e.getMessage(), e);
            }
        }
    }

    /** The source's guest as the activity post-copy pauses, and resumes if the migration fails. */
    private static final class Guest implements GuestActivity {
        private final Machine machine;
        private Machine.Running running;
        private Machine.Outcome outcome;

        Guest(Machine.Running running) {
            this.machine = running.machine();
            this.running = running;
        }

        @Override
        public void pause() {
            try {
                outcome = running.pause();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while pausing the guest", e);
            }
        }

        @Override
        public void resume() {
            running = machine.start();  // the source holds every page: the guest carries on here
        }

        @Override
        public BitSet written() {
            return new BitSet();  // post-copy sends no round while the guest runs
        }
    }

    /**
     * Sends a running machine by post-copy. Returns once the destination holds every page; the
     * guest at the source is paused and must not run again. When it throws after the pause,
     * the guest at the source runs again ({@link Machine#running()}).
     */
    static Migration.Report send(Machine.Running running, InputStream from, CountingOutputStream to, SecretKey key,
                                 long start) throws IOException {
        Machine machine = running.machine();
        Guest guest = new Guest(running);
        PostCopy.Report report = PostCopy.send(Migration.owners(machine), guest,
                List.of(new VcpuState(machine, kind(machine.config()))), from, to, key, TIMEOUT);
        return new Migration.Report(Migration.Path.POST_COPY, "asked for: the destination runs at once, its pages follow",
                List.of(), report.pausedToResumedNs(), System.nanoTime() - start, to.count(),
                machine.config().memorySize(), guest.outcome);
    }

    /**
     * Receives a machine by post-copy and runs it at once, its pages still at the source.
     *
     * @param backing the backing of its memory, or null for the source's
     */
    static LazyMachineLoad receive(Kvm kvm, InputStream from, OutputStream to, SecretKey key, Backing backing)
            throws IOException {
        long start = System.nanoTime();
        AtomicReference<Machine> built = new AtomicReference<>();
        try {
            PostCopy.Arrival arrival = PostCopy.receiveInto(from, to, key, description -> {
                Machine.Config config = config(description, backing);
                Machine machine = Machine.bootForRestore(kvm, config);
                built.set(machine);
                return new PostCopy.Target(Migration.owners(machine), List.of(new VcpuState(machine, kind(config))));
            }, TIMEOUT);
            return LazyMachineLoad.resume(built.get(), arrival.restore(), start, arrival.pausedAtNanos());
        } catch (IOException | RuntimeException e) {
            Machine machine = built.get();
            if (machine != null) {
                machine.close();
            }
            throw e;
        }
    }
}
