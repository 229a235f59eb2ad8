package dev.guestmemfd.models;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Invalidation;
import dev.guestmemfd.Content;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.Owner;
import dev.guestmemfd.OwnerRefusal;
import dev.guestmemfd.migration.CarriedState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The common part of the architecture models: one state per page of one binding, a log of
 * the architecture's operations that each library call became, and the rule that a refusal
 * leaves every page as it was.
 *
 * <p>A model has a guest. A <em>cooperative</em> guest (the default) does its side of every
 * conversion as a real guest that asked for it would: it validates or accepts pages given to
 * it, and releases or rescinds pages before it asks for them to be shared. Turn cooperation
 * off to see what the architecture refuses when the guest has not done its part.
 *
 * <p>A model's state travels with its file in a memory-only migration ({@link CarriedState}):
 * each page's architecture state, whether the guest cooperates, and the architecture's own
 * launch state (launched, finalized with its measurement, active). Its log and violations
 * stay behind: they tell what happened at the source.
 *
 * @implSpec Called by the library with the file's lock held; the guest-side methods of the
 * models synchronize on the model.
 */
public abstract sealed class ArchitectureModel implements Owner, CarriedState
        permits SevSnpModel, TdxModel, PkvmModel, CcaModel, GunyahModel {
    protected static final long PAGE = GuestMemory.PAGE_SIZE;

    private Binding binding;
    /** The architecture's state of each page, as the model's own constants. */
    protected int[] state = new int[0];
    private final Map<Long, int[]> prepared = new HashMap<>();
    private final List<String> log = new ArrayList<>();
    private final List<String> violations = new ArrayList<>();
    private boolean cooperativeGuest = true;

    /** For the sealed subclasses: models are made one per architecture. */
    ArchitectureModel() {
    }

    /** {@return the architecture's name} */
    public abstract String architecture();

    /** {@return how many page states the architecture has: they are numbered from 0} */
    abstract int stateCount();

    /** Writes the architecture's own state besides the pages' (launched or not, a measurement). */
    void exportOwn(DataOutputStream out) throws IOException {
    }

    /**
     * Reads what {@link #exportOwn} wrote; {@return the change that takes it on, run only once
     * the whole state read}
     */
    Runnable importOwn(DataInputStream in) throws IOException {
        return () -> { };
    }

    /** {@return the name of a page state} */
    protected abstract String stateName(int s);

    /** {@return the state a page starts in, private or shared in the library} */
    protected abstract int initialState(boolean isPrivate);

    /**
     * {@return true when a conversion in this direction can keep the pages' bytes now} The
     * answer may change once, when the guest is launched or finalized: SEV-SNP and TDX keep
     * bytes only towards private and only before, as the kernel grants {@code PRESERVE}.
     */
    public abstract boolean keepsContent(boolean toPrivate);

    /**
     * {@return whether the architecture can give the content mode towards {@code target}}
     * PRESERVE only where {@link #keepsContent} says so; UNSPECIFIED and ZERO (towards shared:
     * the library refuses ZERO towards private itself) everywhere, as in the kernel.
     */
    @Override
    public final synchronized boolean supportsContent(Binding b, Attribute target, Content content) {
        return content != Content.PRESERVE || keepsContent(target == Attribute.PRIVATE);
    }

    /** One page becomes the guest's. */
    protected abstract void toPrivate(long offset, int page) throws OwnerRefusal;

    /** One page goes back to being shared. */
    protected abstract void toShared(long offset, int page) throws OwnerRefusal;

    /** One page was populated with launch content. */
    protected abstract void populated(long offset, int page) throws OwnerRefusal;

    /** Sets whether the guest does its side of conversions by itself. */
    public synchronized void cooperativeGuest(boolean on) {
        cooperativeGuest = on;
    }

    protected boolean cooperative() {
        return cooperativeGuest;
    }

    /** {@return the architecture operations performed so far, oldest first} */
    public synchronized List<String> log() {
        return List.copyOf(log);
    }

    /** {@return what the library did that the architecture could not have allowed, but cannot refuse} */
    public synchronized List<String> violations() {
        return List.copyOf(violations);
    }

    /** {@return the name of the state of the page at file offset {@code offset}} */
    public synchronized String stateOf(long offset) {
        return stateName(state[page(offset)]);
    }

    protected void record(String operation, long offset) {
        log.add(operation + " 0x" + Long.toHexString(offset));
    }

    protected void violation(String what, long offset) {
        violations.add(what + " at 0x" + Long.toHexString(offset));
    }

    protected static OwnerRefusal refuse(long offset, String reason) {
        return new OwnerRefusal(offset, reason);
    }

    protected int page(long offset) {
        return (int) ((offset - binding.offset()) / PAGE);
    }

    protected Binding binding() {
        return binding;
    }

    /** Takes each page's first state from the file's attributes. */
    @Override
    public final synchronized void bound(Binding b) {
        attach(b);
    }

    private void attach(Binding b) {
        if (binding == b) {
            return;
        }
        if (binding != null) {
            throw new IllegalStateException(architecture() + " model already owns a binding");
        }
        binding = b;
        state = new int[(int) (b.length() / PAGE)];
        for (int i = 0; i < state.length; i++) {
            state[i] = initialState(b.memory().attribute(b.offset() + i * PAGE) == Attribute.PRIVATE);
        }
    }

    @Override
    public final synchronized void prepareInaccessible(Binding b, long offset, long length, Content content)
            throws OwnerRefusal {
        attach(b);
        // The library asked supportsContent first: a PRESERVE that gets here is one the architecture gives.
        step(b, offset, length, true);
    }

    @Override
    public final synchronized void prepareAccessible(Binding b, long offset, long length, Content content)
            throws OwnerRefusal {
        attach(b);
        step(b, offset, length, false);
    }

    private void step(Binding b, long offset, long length, boolean toPrivate) throws OwnerRefusal {
        int first = page(offset);
        int count = (int) (length / PAGE);
        int[] before = Arrays.copyOfRange(state, first, first + count);
        int logSize = log.size();
        try {
            for (int i = 0; i < count; i++) {
                long at = offset + i * PAGE;
                if (toPrivate) {
                    toPrivate(at, first + i);
                } else {
                    toShared(at, first + i);
                }
            }
        } catch (OwnerRefusal refusal) {
            System.arraycopy(before, 0, state, first, count);
            log.subList(logSize, log.size()).clear();
            throw refusal;
        }
        prepared.put(offset, before);
    }

    @Override
    public final synchronized void rollback(Binding b, long offset, long length, Attribute attribute) {
        int[] before = prepared.remove(offset);
        if (before != null) {
            System.arraycopy(before, 0, state, page(offset), before.length);
            record("rollback to " + attribute, offset);
        }
    }

    @Override
    public synchronized void invalidateEnd(Binding b, long offset, long length, Invalidation why) {
        prepared.clear();
    }

    @Override
    public final synchronized void populate(Binding b, long offset, long length) throws OwnerRefusal {
        attach(b);
        int first = page(offset);
        int count = (int) (length / PAGE);
        int[] before = Arrays.copyOfRange(state, first, first + count);
        try {
            for (int i = 0; i < count; i++) {
                populated(offset + i * PAGE, first + i);
            }
        } catch (OwnerRefusal refusal) {
            System.arraycopy(before, 0, state, first, count);
            throw refusal;
        }
    }

    /** {@return the architecture's name: only a model of the same architecture takes this one's state} */
    @Override
    public String kind() {
        return architecture();
    }

    /**
     * {@return UTF architecture, u8 cooperative guest, u32 pages, one u8 state per page, then
     * the architecture's own launch state}
     *
     * @throws IllegalStateException when the model owns no binding yet
     */
    @Override
    public final synchronized byte[] exportState() {
        if (binding == null) {
            throw new IllegalStateException(architecture() + " model owns no binding: it has no state to carry");
        }
        try {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream(state.length + 64);
            DataOutputStream out = new DataOutputStream(bytes);
            out.writeUTF(architecture());
            out.writeBoolean(cooperativeGuest);
            out.writeInt(state.length);
            for (int s : state) {
                out.writeByte(s);
            }
            exportOwn(out);
            return bytes.toByteArray();
        } catch (IOException e) {
            throw new IllegalStateException("a byte array stream failed", e);
        }
    }

    /**
     * Takes on the state of a model of the same architecture at the source, for a binding of
     * the same size: the pages' states replace those this model derived while the pages landed.
     *
     * @throws IllegalArgumentException for another architecture, another number of pages, a
     *                                  state this architecture does not have, a cut state or
     *                                  bytes after it, or a model that owns no binding yet;
     *                                  the model is then unchanged
     */
    @Override
    public final synchronized void importState(byte[] carried) {
        if (binding == null) {
            throw new IllegalArgumentException(architecture() + " model owns no binding to take a state for");
        }
        try {
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(carried));
            String arch = in.readUTF();
            if (!arch.equals(architecture())) {
                throw new IllegalArgumentException("a " + arch + " state cannot go into a " + architecture() + " model");
            }
            boolean cooperative = in.readBoolean();
            int pages = in.readInt();
            if (pages != state.length) {
                throw new IllegalArgumentException("a state of " + pages + " pages for a binding of " + state.length);
            }
            int[] next = new int[pages];
            for (int i = 0; i < pages; i++) {
                next[i] = in.readUnsignedByte();
                if (next[i] >= stateCount()) {
                    throw new IllegalArgumentException("page " + i + " has state " + next[i] + ", which "
                            + architecture() + " does not have");
                }
            }
            Runnable own = importOwn(in);
            if (in.read() != -1) {
                throw new IllegalArgumentException("bytes after the " + architecture() + " state");
            }
            state = next;
            cooperativeGuest = cooperative;
            prepared.clear();
            own.run();
            record("state imported", 0);
        } catch (IOException e) {
            throw new IllegalArgumentException("the " + architecture() + " state is cut", e);
        }
    }
}
