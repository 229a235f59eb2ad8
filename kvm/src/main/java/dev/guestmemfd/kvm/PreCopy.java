package dev.guestmemfd.kvm;

import dev.guestmemfd.ChangeLog;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.Snapshot;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import javax.crypto.SecretKey;

/**
 * The sender's side of a machine's migration: the description first, then the pages in
 * rounds while the guest runs (pre-copy) or once with it paused (stop-and-copy), then the
 * vCPU state, all one snapshot stream.
 */
final class PreCopy {
    /** The receiver's byte saying its VM is built: the guest pauses only once the other side can take it. */
    static final int READY = 1;

    private PreCopy() {
    }

    /** What the sender did: the path, the rounds, when the guest paused and what it did until then. */
    record Sent(Migration.Path path, String why, List<Long> rounds, long pausedAt, Machine.Outcome source) { }

    static Sent write(Machine.Running running, SecretKey key, DataOutputStream out, DataInputStream in,
                      Migration.Options options) throws IOException {
        Machine machine = running.machine();
        Snapshot.Writer writer = Snapshot.writer(Migration.owners(machine), key, out);
        writer.writeState(MachineImage.describe(machine.config()));
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
        writer.writeState(MachineImage.vcpuState(machine));
        writer.finish();
        return new Sent(refusal == null ? Migration.Path.PRE_COPY : Migration.Path.STOP_AND_COPY,
                refusal == null ? "the memslots log dirty pages" : refusal, List.copyOf(rounds), pausedAt, source);
    }

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
}
