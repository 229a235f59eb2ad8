package dev.guestmemfd.kvm;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.LazyRestore;
import dev.guestmemfd.PageSource;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * A {@link Machine} loaded lazily and already running: built from the description its
 * {@link PageSource} carries, with its memory and memslots but no pages; the pages restored by
 * a {@link LazyRestore} into the memslots' bindings (each arrives when the guest first touches
 * it, or from the background pull); the vCPU state set; the vCPUs started at once.
 *
 * <p>A guest must never run on with holes: when the restore fails (the source is cut short,
 * altered, dies, or its digest does not check out at the end), its failure listener stops
 * every vCPU for good ({@link Machine.Running#stop}). A vCPU that reaches a page that did not
 * come leaves {@code KVM_RUN} at once, since the restore poisons it (measured by
 * {@code LazyRestoreGuestTest}: an MMIO exit at the page for a data read,
 * {@code KVM_EXIT_INTERNAL_ERROR} for an instruction fetch); the others are kicked out. The
 * machine then never runs again; bytes it ran on before the failure are why it must not.
 *
 * <p>Why the vCPUs may fault on pages that are not there yet: they fault inside
 * {@code KVM_RUN}, native code, which the JVM already counts as safe for a safepoint; the host
 * protocol touches guest memory only through the library ({@link dev.guestmemfd.HostMapping}),
 * which fetches first. The memory is lazy on the memfd backing; on the others userfaultfd
 * cannot serve the range, so the restore is done eagerly before the vCPUs start and
 * {@link #eagerReason()} says why.
 *
 * @implSpec Thread safe: the restore's failure may stop the guest from any thread.
 */
public final class LazyMachineLoad implements AutoCloseable {
    private final Machine machine;
    private final LazyRestore restore;
    private final Machine.Running running;
    private final long startNanos;
    private final long sourcePausedAtNanos;

    private LazyMachineLoad(Machine machine, LazyRestore restore, Machine.Running running, long startNanos,
                            long sourcePausedAtNanos) {
        this.machine = machine;
        this.restore = restore;
        this.running = running;
        this.startNanos = startNanos;
        this.sourcePausedAtNanos = sourcePausedAtNanos;
    }

    /**
     * {@return the configuration of the machine {@code source} describes, with {@code backing}
     * instead of the saved one when it is not null, or empty when its first owner state record
     * is not a machine's description} The memory of a snapshot restores into any backing.
     */
    static Optional<Machine.Config> describedBy(PageSource source, Backing backing) {
        List<byte[]> states = source.ownerStates();
        if (states.size() != 2) {
            return Optional.empty();  // a machine's stream carries its description and its vCPU state
        }
        try {
            Machine.Config config = MachineImage.config(states.getFirst());
            return Optional.of(backing == null ? config : config.withBacking(backing));
        } catch (IOException | IllegalArgumentException notAMachine) {
            return Optional.empty();
        }
    }

    /**
     * Builds the machine {@code source} describes and runs it at once on lazily restored
     * memory. The source is the load's from here on: {@link #close} closes it, and so does a
     * refusal.
     *
     * @param backing the backing of the new machine's memory, or null for the saved one
     * @throws GuestMemoryException {@code EBADMSG} when the source does not describe a machine
     *                              (its owner states are not a description and a vCPU state) or
     *                              its vCPU state does not read; {@code EINVAL} when its memory
     *                              is of another size than the description says; {@code EBADMSG}
     *                              on an eager restore that does not check out
     * @throws KvmException         when KVM refuses to build the machine
     * @throws IOException          when an eager restore cannot read its source
     */
    static LazyMachineLoad start(Kvm kvm, PageSource source, Backing backing) throws IOException {
        long started = System.nanoTime();
        String op = "lazyMachineLoad";
        if (kvm == null || source == null) {
            closeQuietly(source);
            throw new GuestMemoryException(Errno.EINVAL, op, "a KVM handle and a source must be given", -1);
        }
        Machine machine = null;
        LazyRestore restore = null;
        try {
            Machine.Config config = describedBy(source, backing).orElseThrow(() -> new GuestMemoryException(Errno.EBADMSG, op,
                    "the source does not describe a machine (its owner states are not a description and a vCPU state)", -1));
            if (config.memorySize() != source.fileSize()) {
                throw new GuestMemoryException(Errno.EINVAL, op, "the machine's description says " + config.memorySize()
                        + " bytes of memory, its memory " + source.fileSize(), -1);
            }
            machine = Machine.bootForRestore(kvm, config);
            List<byte[]> states = new ArrayList<>();
            restore = LazyRestore.start(Migration.owners(machine), source, states::add);
            // The vCPU state is set once the range is registered: nothing of it reads guest
            // memory in long mode, and were it to, the read would be served, not filled with zeros.
            try {
                MachineImage.restoreVcpus(machine, states.getLast());
            } catch (java.io.UncheckedIOException | KvmException e) {
                throw new GuestMemoryException(Errno.EBADMSG, op, "the vCPU state does not read: " + e.getMessage(), -1);
            }
            return resume(machine, restore, started, -1);
        } catch (IOException | RuntimeException e) {
            if (restore != null) {
                restore.close();  // closes the source too
            } else {
                closeQuietly(source);
            }
            if (machine != null) {
                machine.close();
            }
            throw e;
        }
    }

    /**
     * Starts the vCPUs of {@code machine}, whose memory {@code restore} is bringing in and whose
     * vCPU state is set, and stops them for good if the restore fails.
     *
     * @param sourcePausedAt the source's {@link System#nanoTime()} at its pause (post-copy), or -1
     */
    static LazyMachineLoad resume(Machine machine, LazyRestore restore, long started, long sourcePausedAt) {
        Machine.Running running = machine.start();
        // Registered after the start: a failure before it runs the listener at once.
        restore.onFailure(cause -> running.stop("its lazy restore failed: " + cause.getMessage()));
        return new LazyMachineLoad(machine, restore, running, started, sourcePausedAt);
    }

    private static void closeQuietly(PageSource source) {
        if (source != null) {
            try {
                source.close();
            } catch (IOException ignored) {
                // only read: nothing to lose
            }
        }
    }

    /** {@return the machine} */
    public Machine machine() {
        return machine;
    }

    /** {@return its vCPUs, running since the load returned} */
    public Machine.Running running() {
        return running;
    }

    /** {@return the restore of its memory: await it, read its counters, see its failure} */
    public LazyRestore restore() {
        return restore;
    }

    /** {@return why the memory was restored eagerly before the vCPUs started, where it was} */
    public Optional<String> eagerReason() {
        return restore.eagerReason();
    }

    /** {@return the {@link System#nanoTime()} at which the load began} */
    public long startNanos() {
        return startNanos;
    }

    /**
     * {@return for a machine received by post-copy, the source's {@link System#nanoTime()} at its
     * pause (comparable on one host only), from which its downtime and first access count}
     */
    public java.util.OptionalLong sourcePausedAtNanos() {
        return sourcePausedAtNanos < 0 ? java.util.OptionalLong.empty() : java.util.OptionalLong.of(sourcePausedAtNanos);
    }

    /**
     * Waits for the guest's first completed access: the first exit of any vCPU (its first
     * port I/O, a halt, a stop).
     *
     * @return nanoseconds from the start of the load to that exit, or -1 when {@code limit} passed first
     */
    public long awaitFirstAccess(Duration limit) throws InterruptedException {
        long at = running.awaitFirstExit(limit);
        return at < 0 ? -1 : at - startNanos;
    }

    /**
     * Pauses the guest: every vCPU leaves {@code KVM_RUN} between exits. Its memory may still be
     * arriving; a paused machine {@link Machine#start}s again, unless the restore failed.
     *
     * @return what the guest did until it paused
     */
    public Machine.Outcome pause() throws InterruptedException {
        return running.pause();
    }

    /**
     * Stops the restore if it is not complete (the guest stops for good, pages not yet come are
     * poisoned), pauses the vCPUs, then closes the machine and the source. Idempotent.
     */
    @Override
    public void close() {
        // The restore first: its failure stops the vCPUs and wakes any waiting in a fault, so
        // the pause below never waits on a page that will not come.
        restore.close();
        try {
            running.pause();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            machine.close();
        }
    }
}
