package dev.guestmemfd.models;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Invalidation;
import dev.guestmemfd.Content;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.Owner;
import dev.guestmemfd.OwnerRefusal;
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
 * @implSpec Called by the library with the file's lock held; the guest-side methods of the
 * models synchronize on the model.
 */
public abstract sealed class ArchitectureModel implements Owner
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
}
