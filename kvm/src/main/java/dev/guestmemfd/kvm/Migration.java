package dev.guestmemfd.kvm;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.Snapshot;
import dev.guestmemfd.migration.CountingOutputStream;
import dev.guestmemfd.migration.X25519Agreement;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.Socket;
import java.util.List;
import javax.crypto.SecretKey;

/**
 * Moves a {@link Machine} to another process, or saves it to a file and loads it back. The
 * machine travels as one {@link Snapshot} stream: first its description (sealed owner
 * state), so the receiver builds the VM while memory is still on its way; then its memory;
 * last each vCPU's state: registers, FPU/SSE/AVX, pending events, MSRs (sealed too: a
 * confidential guest's registers are as secret as its private pages).
 *
 * <p>Two paths, chosen by what the memslots allow:
 * <ul>
 *   <li><b>pre-copy</b> on ordinary memslots (the memfd and memfd_secret backings): dirty
 *       logging is turned on, every page is sent while the guest runs, then each round sends
 *       the pages changed since (KVM's dirty log for the guest's writes, the file's
 *       {@link dev.guestmemfd.ChangeLog} for the library's and the host's) until a round is small; then the
 *       guest pauses for the last round and its registers.</li>
 *   <li><b>stop-and-copy</b> on guest_memfd memslots (the kernel backing): the kernel refuses
 *       {@code KVM_MEM_LOG_DIRTY_PAGES} there with {@code EINVAL}, so the guest pauses first
 *       and everything is sent once.</li>
 * </ul>
 *
 * <p>Over a loopback socket, the two owners first agree on a key ({@link X25519Agreement});
 * over an authenticated channel the caller passes the channel's session key. The receiver
 * sends u8 1 once it
 * has built the VM from the description (the sender pauses the guest only after that), and
 * answers the finished stream with u64, its acknowledgement that it is ready to run (its own
 * {@code System.nanoTime()} then, which the sender does not use: clocks of two hosts do not
 * compare). The sender times downtime on its own clock, from its pause to this answer's arrival.
 */
public final class Migration {
    /** How the memory moved. */
    public enum Path {
        /** Rounds while the guest ran, then a short pause. */
        PRE_COPY,
        /** The guest paused, then everything was sent. */
        STOP_AND_COPY,
        /** The guest paused and ran on at the destination at once; its pages followed on demand. */
        POST_COPY
    }

    /**
     * How to migrate.
     *
     * @param preCopy        try pre-copy where the memslots allow dirty logging
     * @param maxRounds      rounds while the guest runs, the first (all pages) included
     * @param convergedBytes pause once a round would send at most this many bytes
     * @param postCopy       post-copy instead: the guest pauses at once and runs on at the
     *                       destination, which asks for each page when it needs it (the receiver
     *                       must be {@link #receivePostCopy}); on any backing, as no dirty log is needed
     */
    public record Options(boolean preCopy, int maxRounds, long convergedBytes, RoundListener listener, boolean postCopy) {
        /** {@return pre-copy where possible, at most 8 rounds, pausing at 1 MiB or less} */
        public static Options defaults() {
            return new Options(true, 8, 1L << 20, (round, bytes) -> { }, false);
        }

        /** {@return these options with pre-copy on or off} */
        public Options withPreCopy(boolean on) {
            return new Options(on, maxRounds, convergedBytes, listener, postCopy);
        }

        /** {@return these options telling {@code l} of each round sent while the guest runs} */
        public Options withRoundListener(RoundListener l) {
            return new Options(preCopy, maxRounds, convergedBytes, l, postCopy);
        }

        /** {@return these options with post-copy on or off} */
        public Options withPostCopy(boolean on) {
            return new Options(preCopy, maxRounds, convergedBytes, listener, on);
        }
    }

    /** Hears each pre-copy round sent while the guest still runs. */
    @FunctionalInterface
    public interface RoundListener {
        /**
         * @param round the round, 0 for the first (every page)
         * @param bytes the page bytes it sent
         */
        void roundSent(int round, long bytes);
    }

    /**
     * What a migration did and cost.
     *
     * @param path               how the memory moved
     * @param why                why this path (the kernel's refusal of dirty logging, for stop-and-copy)
     * @param roundBytes         page bytes sent per round; the last was sent with the guest paused
     * @param pausedToRestoredNs from the pause to the arrival of the destination's acknowledgement
     *                           that it is ready to run, on the source's clock (downtime)
     * @param totalNs            from the start of the migration to that acknowledgement, on the source's clock
     * @param bytesSent          bytes written to the other side, handshake included
     * @param memoryBytes        the guest's memory size
     * @param source             what the guest did at the source until it paused
     */
    public record Report(Path path, String why, List<Long> roundBytes, long pausedToRestoredNs, long totalNs,
                         long bytesSent, long memoryBytes, Machine.Outcome source) {
        /** {@return the page bytes of all rounds} */
        public long pageBytes() {
            return roundBytes.stream().mapToLong(Long::longValue).sum();
        }
    }

    private Migration() {
    }

    // ------------------------------------------------------------------ sockets

    /**
     * Migrates a running machine over a loopback socket, with a key agreed by
     * {@link X25519Agreement} (unauthenticated: for two processes of one machine); it is paused
     * when this returns and must not run again: the guest now lives on the other side. When it
     * fails (the other side hangs up, refuses, or the network breaks), the guest at the source
     * is intact: still running if the failure came before the pause, else paused and able to
     * {@link Machine#start} again.
     */
    public static Report send(Machine.Running running, Socket socket, Options options) throws IOException {
        return send(running, socket.getOutputStream(), socket.getInputStream(), options);
    }

    /**
     * Migrates a running machine over a pair of streams (a socket's, or pipes), agreeing on
     * the key first as {@link #send(Machine.Running, Socket, Options)} does.
     */
    public static Report send(Machine.Running running, OutputStream to, InputStream from, Options options)
            throws IOException {
        long start = System.nanoTime();
        CountingOutputStream counting = new CountingOutputStream(to);
        SecretKey key = X25519Agreement.agree(from, counting);
        return send(running, from, counting, key, options, start);
    }

    /**
     * Migrates a running machine over a channel that already holds a session key (an
     * authenticated one, for two hosts); otherwise as {@link #send(Machine.Running, Socket, Options)}.
     *
     * @param from the answers of the receiver
     * @param to   where the stream goes
     * @param key  the session key both ends hold
     */
    public static Report send(Machine.Running running, InputStream from, OutputStream to, SecretKey key,
                              Options options) throws IOException {
        long start = System.nanoTime();
        return send(running, from, new CountingOutputStream(to), key, options, start);
    }

    private static Report send(Machine.Running running, InputStream from, CountingOutputStream counting,
                               SecretKey key, Options options, long start) throws IOException {
        if (options.postCopy()) {
            return PostCopyMachine.send(running, from, counting, key, start);
        }
        DataOutputStream out = new DataOutputStream(new BufferedOutputStream(counting, 1 << 16));
        DataInputStream in = new DataInputStream(from);
        PreCopy.Sent sent = PreCopy.write(running, key, out, in, options);
        in.readLong();  // the destination is ready to run; its clock's value means nothing here
        long restoredAt = System.nanoTime();
        return new Report(sent.path(), sent.why(), sent.rounds(), restoredAt - sent.pausedAt(), restoredAt - start,
                counting.count(), running.machine().config().memorySize(), sent.source());
    }

    /**
     * Receives a machine over a loopback socket, agreeing on the key as
     * {@link #send(Machine.Running, Socket, Options)} does: builds it as soon as its
     * description arrives, restores memory and vCPU state, and tells the sender. The caller
     * runs it. On any failure the half-built machine is closed.
     */
    public static Machine receive(Kvm kvm, Socket socket) throws IOException {
        return receive(kvm, socket.getInputStream(), socket.getOutputStream());
    }

    /** Receives over a pair of streams, agreeing on the key first. @see #receive(Kvm, Socket) */
    public static Machine receive(Kvm kvm, InputStream from, OutputStream to) throws IOException {
        InputStream in = new BufferedInputStream(from, 1 << 16);
        SecretKey key = X25519Agreement.agree(in, to);
        return receive(kvm, in, to, key);
    }

    /**
     * Receives over a channel that already holds a session key. @see #receive(Kvm, Socket)
     *
     * @param key the session key both ends hold
     */
    public static Machine receive(Kvm kvm, InputStream from, OutputStream to, SecretKey key) throws IOException {
        DataInputStream in = new DataInputStream(from instanceof BufferedInputStream ? from
                : new BufferedInputStream(from, 1 << 16));
        DataOutputStream out = new DataOutputStream(to);
        // The stream is one message of the conversation: the answer follows it, so it is read
        // up to its sealed end and no further.
        Machine machine = load(kvm, key, in, new Snapshot.ReplayGuard(), Snapshot.Framing.EMBEDDED, built -> {
            try {
                out.writeByte(PreCopy.READY);
                out.flush();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        });
        out.writeLong(System.nanoTime());
        out.flush();
        return machine;
    }

    /**
     * Receives a machine sent with {@link Options#postCopy()} over a loopback socket, agreeing
     * on the key as {@link #send(Machine.Running, Socket, Options)} does, and runs it at once:
     * built from the description, its memory given the source's layout, its vCPU state set, its
     * vCPUs started while every page is still at the source. The guest's faults and the
     * background pull ask the source for pages; if the channel breaks before every page came,
     * the vCPUs stop for good at once (a vCPU at a page that cannot come leaves
     * {@code KVM_RUN} there), and the source runs its guest on.
     *
     * @param backing the backing of its memory, or null for the source's (memfd restores lazily;
     *                the others pull every page before the guest runs)
     */
    public static LazyMachineLoad receivePostCopy(Kvm kvm, Socket socket, Backing backing) throws IOException {
        InputStream in = new BufferedInputStream(socket.getInputStream(), 1 << 16);
        OutputStream out = socket.getOutputStream();
        SecretKey key = X25519Agreement.agree(in, out);
        return receivePostCopy(kvm, in, out, key, backing);
    }

    /**
     * Receives a machine sent by post-copy over a channel that already holds a session key.
     * @see #receivePostCopy(Kvm, Socket, Backing)
     *
     * @throws dev.guestmemfd.GuestMemoryException {@code EBADMSG} for a message that does not
     *                                             open or a sender that does not send a machine
     */
    public static LazyMachineLoad receivePostCopy(Kvm kvm, InputStream from, OutputStream to, SecretKey key, Backing backing)
            throws IOException {
        return PostCopyMachine.receive(kvm, from, to, key, backing);
    }

    // ------------------------------------------------------------------ files

    /**
     * Saves a paused machine to a stream (a file): description, memory, vCPU state, one
     * snapshot stream sealed with {@code key}.
     *
     * @return the page bytes written
     */
    public static long save(Machine paused, SecretKey key, OutputStream out) throws IOException {
        Snapshot.Writer writer = Snapshot.writer(owners(paused), key, out);
        writer.writeState(MachineImage.describe(paused.config()));
        writer.writeAll();
        writer.writeState(MachineImage.vcpuState(paused));
        writer.finish();
        return writer.pageBytes();
    }

    /**
     * Loads a machine saved by {@link #save} or sent by {@link #send}: builds it, restores its
     * memory and vCPUs. The caller runs it. {@code in} holds the stream and nothing after it.
     *
     * @throws dev.guestmemfd.GuestMemoryException {@code EBADMSG} for a stream that is cut,
     *                                             altered, followed by other bytes or sealed
     *                                             with another key;
     *                                             {@code EALREADY} for one {@code replays} saw
     */
    public static Machine load(Kvm kvm, SecretKey key, InputStream in, Snapshot.ReplayGuard replays) throws IOException {
        return load(kvm, key, in, replays, null);
    }

    /**
     * Loads a machine as {@link #load(Kvm, SecretKey, InputStream, Snapshot.ReplayGuard)} does,
     * its memory in {@code backing} instead of the saved one when that is not null (the memory
     * of a snapshot restores into any backing: to compare an eager load with a lazy one on the
     * same backing).
     */
    public static Machine load(Kvm kvm, SecretKey key, InputStream in, Snapshot.ReplayGuard replays, Backing backing)
            throws IOException {
        return load(kvm, key, in, replays, Snapshot.Framing.WHOLE_INPUT, backing, built -> { });
    }

    /**
     * Loads a machine lazily and runs it at once: built from the description {@code source}
     * carries (a snapshot file: {@link dev.guestmemfd.PageSource#open}), with its memory and
     * memslots but no pages; the vCPU state set; the vCPUs started before a page arrived.
     * Each page comes when the guest first touches it, or from the background pull; if the
     * restore fails the vCPUs stop for good (see {@link LazyMachineLoad}). Lazy on the memfd
     * backing, eager (before the vCPUs start, the reason in {@link LazyMachineLoad#eagerReason()})
     * on those userfaultfd does not serve.
     *
     * @param backing the backing of the new machine's memory, or null for the saved one
     * @throws dev.guestmemfd.GuestMemoryException {@code EBADMSG} for a source that does not
     *                                             describe a machine; {@code EINVAL} for a null
     *                                             argument or a memory of another size than
     *                                             described
     */
    public static LazyMachineLoad load(Kvm kvm, dev.guestmemfd.PageSource source, Backing backing) throws IOException {
        return LazyMachineLoad.start(kvm, source, backing);
    }

    /**
     * {@return the configuration of the machine {@code source} holds (its first owner state
     * record is a machine's description), or empty for a stream of memory alone}
     */
    public static java.util.Optional<Machine.Config> describedMachine(dev.guestmemfd.PageSource source) {
        return LazyMachineLoad.describedBy(source, null);
    }

    private static Machine load(Kvm kvm, SecretKey key, InputStream in, Snapshot.ReplayGuard replays,
                                Snapshot.Framing framing, java.util.function.Consumer<Machine> built) throws IOException {
        return load(kvm, key, in, replays, framing, null, built);
    }

    /** @param built told when the machine is built, before its memory is restored */
    private static Machine load(Kvm kvm, SecretKey key, InputStream in, Snapshot.ReplayGuard replays,
                                Snapshot.Framing framing, Backing backing, java.util.function.Consumer<Machine> built)
            throws IOException {
        Snapshot.Reader reader = Snapshot.reader(key, in, replays, framing);
        Machine.Config config = MachineImage.config(reader.readState());
        if (backing != null) {
            config = config.withBacking(backing);
        }
        if (config.memorySize() != reader.fileSize()) {
            throw new IOException("the machine's description says " + config.memorySize()
                    + " bytes of memory, its memory stream " + reader.fileSize());
        }
        Machine machine = Machine.bootForRestore(kvm, config);
        try {
            warmUp(machine);
            built.accept(machine);
            reader.restore(owners(machine), state -> MachineImage.restoreVcpus(machine, state));
            return machine;
        } catch (IOException | RuntimeException e) {
            machine.close();
            throw e;
        }
    }

    /**
     * Converts the last page to private and back before the guest pauses at the source: the
     * first conversion in a fresh JVM loads and links the conversion path (JFR events, the
     * owner, the kernel calls), which would otherwise count as downtime (the demo's downtime
     * drops by more than half with it: compare {@code gmem migrate --demo} without this call).
     * The page is a hole before and after; nothing is allocated.
     */
    private static void warmUp(Machine machine) {
        GuestMemory memory = machine.memory();
        long last = memory.size() - GuestMemory.PAGE_SIZE;
        memory.convert(last, GuestMemory.PAGE_SIZE, dev.guestmemfd.Attribute.PRIVATE, dev.guestmemfd.Content.UNSPECIFIED);
        memory.convert(last, GuestMemory.PAGE_SIZE, dev.guestmemfd.Attribute.SHARED, dev.guestmemfd.Content.ZERO);
    }

    /**
     * {@return null when KVM here logs dirty pages of a memslot over {@code backing}, so a
     * migration can pre-copy; else the kernel's refusal} Asks with a 2 MiB VM of one slot.
     */
    public static String dirtyLoggingRefusal(Kvm kvm, Backing backing) {
        long size = 2L << 20;
        long flags = dev.guestmemfd.Flag.MMAP.bit() | dev.guestmemfd.Flag.INIT_SHARED.bit()
                | (backing == Backing.SECRET ? dev.guestmemfd.Flag.NO_DIRECT_MAP.bit() : 0);
        try (Vm vm = kvm.createVm();
             GuestMemory memory = backing == Backing.KERNEL ? vm.createGuestMemory(size, flags)
                     : GuestMemory.create(size, flags, backing)) {
            Memslot slot = vm.bind(memory, 0, 0, 0, size, false);
            try {
                vm.logDirty(slot, true);
                return null;
            } catch (KvmException refused) {
                return refused.getMessage();
            }
        }
    }

    /** {@return the machine's memslot bindings: together they cover its memory file once} */
    static List<Binding> owners(Machine machine) {
        return machine.memslots().stream().map(Memslot::binding).toList();
    }
}
