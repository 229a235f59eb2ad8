package dev.guestmemfd.kvm;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.ChangeLog;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.Snapshot;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.net.Socket;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.MessageDigest;
import java.security.PublicKey;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import javax.crypto.KeyAgreement;
import javax.crypto.SecretKey;
import javax.crypto.spec.SecretKeySpec;

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
 *       {@link ChangeLog} for the library's and the host's) until a round is small; then the
 *       guest pauses for the last round and its registers.</li>
 *   <li><b>stop-and-copy</b> on guest_memfd memslots (the kernel backing): the kernel refuses
 *       {@code KVM_MEM_LOG_DIRTY_PAGES} there with {@code EINVAL}, so the guest pauses first
 *       and everything is sent once.</li>
 * </ul>
 *
 * <p>Over a socket, the two owners first agree on a key (X25519 public keys, u16 length and
 * X.509 bytes each way, then SHA-256 of the shared secret). The receiver sends u8 1 once it
 * has built the VM from the description (the sender pauses the guest only after that), and
 * answers the finished stream with u64 {@code System.nanoTime()}, the moment it is ready to
 * run (one clock on one host, which is what makes downtime measurable here).
 */
public final class Migration {
    /** How the memory moved. */
    public enum Path {
        /** Rounds while the guest ran, then a short pause. */
        PRE_COPY,
        /** The guest paused, then everything was sent. */
        STOP_AND_COPY
    }

    /**
     * How to migrate.
     *
     * @param preCopy        try pre-copy where the memslots allow dirty logging
     * @param maxRounds      rounds while the guest runs, the first (all pages) included
     * @param convergedBytes pause once a round would send at most this many bytes
     */
    public record Options(boolean preCopy, int maxRounds, long convergedBytes, RoundListener listener) {
        /** {@return pre-copy where possible, at most 8 rounds, pausing at 1 MiB or less} */
        public static Options defaults() {
            return new Options(true, 8, 1L << 20, (round, bytes) -> { });
        }

        /** {@return these options with pre-copy on or off} */
        public Options withPreCopy(boolean on) {
            return new Options(on, maxRounds, convergedBytes, listener);
        }

        /** {@return these options telling {@code l} of each round sent while the guest runs} */
        public Options withRoundListener(RoundListener l) {
            return new Options(preCopy, maxRounds, convergedBytes, l);
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
     * @param pausedToRestoredNs from the pause to the destination being ready to run (downtime)
     * @param totalNs            from the start of the migration to the destination being ready
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
     * Migrates a running machine over a socket; it is paused when this returns and must not
     * run again: the guest now lives on the other side. When it fails (the other side hangs
     * up, refuses, or the network breaks), the guest at the source is intact: still running if
     * the failure came before the pause, else paused and able to {@link Machine#start} again.
     */
    public static Report send(Machine.Running running, Socket socket, Options options) throws IOException {
        return send(running, socket.getOutputStream(), socket.getInputStream(), options);
    }

    /**
     * Migrates a running machine over a pair of streams (a socket's, or pipes).
     *
     * @see #send(Machine.Running, Socket, Options)
     */
    public static Report send(Machine.Running running, OutputStream to, InputStream from, Options options)
            throws IOException {
        long start = System.nanoTime();
        CountingStream counting = new CountingStream(to);
        DataOutputStream out = new DataOutputStream(new BufferedOutputStream(counting, 1 << 16));
        DataInputStream in = new DataInputStream(from);
        SecretKey key = agree(in, out);
        Sent sent = write(running, key, out, in, options);
        long restoredAt = in.readLong();
        return new Report(sent.path, sent.why, sent.rounds, restoredAt - sent.pausedAt, restoredAt - start,
                counting.count, running.machine().config().memorySize(), sent.source);
    }

    /**
     * Receives a machine: builds it as soon as its description arrives, restores memory and
     * vCPU state, and tells the sender. The caller runs it. On any failure the half-built
     * machine is closed.
     */
    public static Machine receive(Kvm kvm, Socket socket) throws IOException {
        return receive(kvm, socket.getInputStream(), socket.getOutputStream());
    }

    /** Receives over a pair of streams. @see #receive(Kvm, Socket) */
    public static Machine receive(Kvm kvm, InputStream from, OutputStream to) throws IOException {
        DataInputStream in = new DataInputStream(new BufferedInputStream(from, 1 << 16));
        DataOutputStream out = new DataOutputStream(to);
        SecretKey key = agree(in, out);
        // The stream is one message of the conversation: the answer follows it, so it is read
        // up to its sealed end and no further.
        Machine machine = load(kvm, key, in, new Snapshot.ReplayGuard(), Snapshot.Framing.EMBEDDED, built -> {
            try {
                out.writeByte(READY);
                out.flush();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        });
        out.writeLong(System.nanoTime());
        out.flush();
        return machine;
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
        writer.writeState(describe(paused.config()));
        writer.writeAll();
        writer.writeState(vcpuState(paused));
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
        return load(kvm, key, in, replays, Snapshot.Framing.WHOLE_INPUT, built -> { });
    }

    /** @param built told when the machine is built, before its memory is restored */
    private static Machine load(Kvm kvm, SecretKey key, InputStream in, Snapshot.ReplayGuard replays,
                                Snapshot.Framing framing, java.util.function.Consumer<Machine> built) throws IOException {
        Snapshot.Reader reader = Snapshot.reader(key, in, replays, framing);
        Machine.Config config = config(reader.readState());
        if (config.memorySize() != reader.fileSize()) {
            throw new IOException("the machine's description says " + config.memorySize()
                    + " bytes of memory, its memory stream " + reader.fileSize());
        }
        Machine machine = Machine.bootForRestore(kvm, config);
        try {
            warmUp(machine);
            built.accept(machine);
            reader.restore(owners(machine), state -> restoreVcpus(machine, state));
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

    // ------------------------------------------------------------------ the sender's side

    private record Sent(Path path, String why, List<Long> rounds, long pausedAt, Machine.Outcome source) { }

    private static Sent write(Machine.Running running, SecretKey key, DataOutputStream out, DataInputStream in,
                              Options options) throws IOException {
        Machine machine = running.machine();
        Snapshot.Writer writer = Snapshot.writer(owners(machine), key, out);
        writer.writeState(describe(machine.config()));
        writer.flush();  // the receiver builds its VM while the pages travel
        String refusal = options.preCopy() ? startDirtyLogging(machine) : "pre-copy was not asked for";
        List<Long> rounds = new ArrayList<>();
        long pausedAt;
        Machine.Outcome source;
        if (refusal != null) {
            awaitReady(in);
            pausedAt = System.nanoTime();
            source = pause(running);
            rounds.add(writer.writeAll());
        } else {
            try (ChangeLog changes = machine.memory().trackChanges()) {
                changed(machine, changes);  // clear both logs: the first round sends everything
                rounds.add(writer.writeAll());
                writer.flush();
                options.listener().roundSent(0, rounds.getLast());
                BitSet pending = changed(machine, changes);
                while (rounds.size() < options.maxRounds()
                        && pending.cardinality() * GuestMemory.PAGE_SIZE > options.convergedBytes()) {
                    rounds.add(writer.writePages(pending));
                    writer.flush();
                    options.listener().roundSent(rounds.size() - 1, rounds.getLast());
                    pending = changed(machine, changes);
                }
                awaitReady(in);
                pausedAt = System.nanoTime();
                source = pause(running);
                pending.or(changed(machine, changes));
                rounds.add(writer.writePages(pending));
            } finally {
                for (Memslot slot : machine.memslots()) {
                    machine.vm().logDirty(slot, false);
                }
            }
        }
        writer.writeState(vcpuState(machine));
        writer.finish();
        return new Sent(refusal == null ? Path.PRE_COPY : Path.STOP_AND_COPY,
                refusal == null ? "the memslots log dirty pages" : refusal, List.copyOf(rounds), pausedAt, source);
    }

    /** The receiver's byte saying its VM is built: the guest pauses only once the other side can take it. */
    private static final int READY = 1;

    private static void awaitReady(DataInputStream in) throws IOException {
        int answer = in.readUnsignedByte();
        if (answer != READY) {
            throw new IOException("the receiver answered " + answer + " instead of saying it is ready");
        }
    }

    /** Turns dirty logging on in every slot; {@return null, or why the kernel refused (then it is off everywhere)} */
    private static String startDirtyLogging(Machine machine) {
        List<Memslot> on = new ArrayList<>();
        for (Memslot slot : machine.memslots()) {
            try {
                machine.vm().logDirty(slot, true);
                on.add(slot);
            } catch (KvmException refused) {
                for (Memslot s : on) {
                    machine.vm().logDirty(s, false);
                }
                return "the kernel refused dirty logging on " + (slot.guestMemfd() ? "a guest_memfd" : "an ordinary")
                        + " memslot: " + refused.getMessage();
            }
        }
        return null;
    }

    /** {@return the file pages written since the last call: by the guest (KVM) or through the library} */
    private static BitSet changed(Machine machine, ChangeLog changes) {
        BitSet pages = changes.drain();
        for (Memslot slot : machine.memslots()) {
            long[] bitmap = machine.vm().dirtyLog(slot);
            int base = Math.toIntExact(slot.binding().offset() / GuestMemory.PAGE_SIZE);
            BitSet dirty = BitSet.valueOf(bitmap);
            for (int p = dirty.nextSetBit(0); p >= 0; p = dirty.nextSetBit(p + 1)) {
                pages.set(base + p);
            }
        }
        return pages;
    }

    private static Machine.Outcome pause(Machine.Running running) throws IOException {
        try {
            return running.pause();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while pausing the guest", e);
        }
    }

    // ------------------------------------------------------------------ what travels besides pages

    private static List<Binding> owners(Machine machine) {
        return machine.memslots().stream().map(Memslot::binding).toList();
    }

    /**
     * The machine's description: u64 memory size, UTF backing, UTF program, u32 vCPUs, then
     * u8 preallocate and u8 hypercalls (how the host serves the guest's requests).
     */
    private static byte[] describe(Machine.Config config) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        DataOutputStream out = new DataOutputStream(bytes);
        out.writeLong(config.memorySize());
        out.writeUTF(config.backing().name());
        out.writeUTF(config.program().name());
        out.writeInt(config.vcpus());
        out.writeBoolean(config.preallocate());
        out.writeBoolean(config.hypercalls());
        return bytes.toByteArray();
    }

    private static Machine.Config config(byte[] description) throws IOException {
        DataInputStream in = new DataInputStream(new ByteArrayInputStream(description));
        long memorySize = in.readLong();
        Backing backing = Backing.valueOf(in.readUTF());
        GuestProgram program = GuestProgram.valueOf(in.readUTF());
        int vcpus = in.readInt();
        boolean preallocate = in.readBoolean();
        boolean hypercalls = in.readBoolean();
        return Machine.Config.of(program, backing, vcpus).withMemorySize(memorySize)
                .withPreallocate(preallocate).withHypercalls(hypercalls);
    }

    /**
     * Each vCPU's state: u32 count, then per vCPU its {@code kvm_regs} (144 bytes),
     * {@code kvm_sregs} (312), XSAVE area (4096: x87, SSE, AVX), {@code kvm_vcpu_events} (64),
     * u32 MSR count and per MSR u32 index and u64 value ({@link Msr#MIGRATED}, as many as
     * KVM reads). Not carried: the local APIC (these VMs have no in-kernel irqchip), debug
     * registers, XCRs and nested state.
     */
    private static byte[] vcpuState(Machine machine) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        DataOutputStream out = new DataOutputStream(bytes);
        List<Vcpu> vcpus = machine.vcpus();
        out.writeInt(vcpus.size());
        try (Arena arena = Arena.ofConfined()) {
            for (Vcpu vcpu : vcpus) {
                out.write(vcpu.registers().toSegment(arena).toArray(ValueLayout.JAVA_BYTE));
                out.write(vcpu.specialRegisters().toSegment(arena).toArray(ValueLayout.JAVA_BYTE));
                out.write(vcpu.xsave());
                out.write(vcpu.events());
                List<Msr> msrs = vcpu.msrs(Msr.MIGRATED);
                out.writeInt(msrs.size());
                for (Msr msr : msrs) {
                    out.writeInt(msr.index());
                    out.writeLong(msr.value());
                }
            }
        }
        return bytes.toByteArray();
    }

    private static void restoreVcpus(Machine machine, byte[] state) {
        try {
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(state));
            List<Vcpu> vcpus = machine.vcpus();
            if (in.readInt() != vcpus.size()) {
                throw new IOException("the vCPU state is for another number of vCPUs");
            }
            try (Arena arena = Arena.ofConfined()) {
                for (Vcpu vcpu : vcpus) {
                    byte[] regs = read(in, Registers.LAYOUT.byteSize());
                    byte[] sregs = read(in, SpecialRegisters.LAYOUT.byteSize());
                    byte[] xsave = read(in, Vcpu.XSAVE.byteSize());
                    byte[] events = read(in, Vcpu.EVENTS.byteSize());
                    int count = in.readInt();
                    if (count < 0 || count > Msr.MIGRATED.length) {
                        throw new IOException("the vCPU state holds " + count + " MSRs");
                    }
                    List<Msr> msrs = new ArrayList<>();
                    for (int i = 0; i < count; i++) {
                        msrs.add(new Msr(in.readInt(), in.readLong()));
                    }
                    // As QEMU orders it: registers and segments, then MSRs, FPU state, events.
                    vcpu.setSpecialRegisters(SpecialRegisters.from(copy(arena, sregs)));
                    vcpu.setRegisters(Registers.from(copy(arena, regs)));
                    vcpu.setMsrs(msrs);
                    vcpu.setXsave(xsave);
                    vcpu.setEvents(events);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static byte[] read(DataInputStream in, long bytes) throws IOException {
        byte[] b = new byte[(int) bytes];
        in.readFully(b);
        return b;
    }

    private static MemorySegment copy(Arena arena, byte[] bytes) {
        MemorySegment s = arena.allocate(bytes.length, 8);
        MemorySegment.copy(MemorySegment.ofArray(bytes), 0, s, 0, bytes.length);
        return s;
    }

    // ------------------------------------------------------------------ key agreement

    /** Agrees on an AES-256 key with the other side. */
    static SecretKey agree(DataInputStream in, DataOutputStream out) throws IOException {
        try {
            KeyPair mine = KeyPairGenerator.getInstance("X25519").generateKeyPair();
            byte[] encoded = mine.getPublic().getEncoded();
            out.writeShort(encoded.length);
            out.write(encoded);
            out.flush();
            byte[] theirs = new byte[in.readUnsignedShort()];
            in.readFully(theirs);
            PublicKey other = KeyFactory.getInstance("X25519").generatePublic(new X509EncodedKeySpec(theirs));
            KeyAgreement agreement = KeyAgreement.getInstance("X25519");
            agreement.init(mine.getPrivate());
            agreement.doPhase(other, true);
            byte[] secret = MessageDigest.getInstance("SHA-256").digest(agreement.generateSecret());
            return new SecretKeySpec(secret, "AES");
        } catch (GeneralSecurityException e) {
            throw new IOException("key agreement failed: " + e.getMessage(), e);
        }
    }

    /** Counts the bytes written through it. */
    private static final class CountingStream extends FilterOutputStream {
        long count;

        CountingStream(OutputStream out) {
            super(out);
        }

        @Override
        public void write(int b) throws IOException {
            out.write(b);
            count++;
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            out.write(b, off, len);
            count += len;
        }
    }
}
