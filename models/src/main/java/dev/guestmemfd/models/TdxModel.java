package dev.guestmemfd.models;

import dev.guestmemfd.OwnerRefusal;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * A model of Intel TDX's Secure EPT: a private page has no entry until the host adds it
 * ({@code TDH.MEM.PAGE.ADD} before the TD is finalized, measured into MRTD) or augments it
 * ({@code TDH.MEM.PAGE.AUG} after, left pending until the guest accepts it with
 * {@code TDG.MEM.PAGE.ACCEPT}). Removal is {@code TDH.MEM.RANGE.BLOCK}, {@code TDH.MEM.TRACK},
 * {@code TDH.MEM.PAGE.REMOVE}, and its content is lost.
 */
public final class TdxModel extends ArchitectureModel {
    static final int SHARED = 0;
    static final int PRIVATE_NO_ENTRY = 1;
    static final int PENDING = 2;
    static final int MAPPED = 3;

    private boolean finalized;
    private MessageDigest mrtd;
    /** The file offsets of the pages added, in order: what MRTD measures, so that a migration can carry it. */
    private final java.util.List<Long> added = new java.util.ArrayList<>();

    public TdxModel() {
        mrtd = newMrtd();
    }

    private static MessageDigest newMrtd() {
        try {
            return MessageDigest.getInstance("SHA-384");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-384", e);
        }
    }

    @Override
    int stateCount() {
        return 4;
    }

    /** u8 finalized, u32 pages added, then each one's file offset, in order. */
    @Override
    void exportOwn(java.io.DataOutputStream out) throws java.io.IOException {
        out.writeBoolean(finalized);
        out.writeInt(added.size());
        for (long offset : added) {
            out.writeLong(offset);
        }
    }

    @Override
    Runnable importOwn(java.io.DataInputStream in) throws java.io.IOException {
        boolean f = in.readBoolean();
        int count = in.readInt();
        if (count < 0 || count > state.length) {
            throw new IllegalArgumentException("a TDX state with " + count + " pages added to " + state.length);
        }
        java.util.List<Long> offsets = new java.util.ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            offsets.add(in.readLong());
        }
        return () -> {
            finalized = f;
            added.clear();
            mrtd = newMrtd();
            for (long offset : offsets) {
                measure(offset);
            }
        };
    }

    private void measure(long offset) {
        added.add(offset);
        mrtd.update(java.nio.ByteBuffer.allocate(8).putLong(0, offset));
    }

    @Override
    public String architecture() {
        return "TDX";
    }

    @Override
    protected String stateName(int s) {
        return switch (s) {
            case SHARED -> "shared";
            case PRIVATE_NO_ENTRY -> "private, no S-EPT entry";
            case PENDING -> "pending";
            default -> "mapped";
        };
    }

    @Override
    protected int initialState(boolean isPrivate) {
        return isPrivate ? PRIVATE_NO_ENTRY : SHARED;
    }

    @Override
    public synchronized boolean keepsContent(boolean toPrivate) {
        // As KVM grants PRESERVE: into the TD before TDH.MR.FINALIZE (the page is added with its
        // bytes), never after, never towards shared (S-EPT removal loses the content).
        return toPrivate && !finalized;
    }

    /** {@code TDH.MR.FINALIZE}: the measurement is sealed and the TD may run. */
    public synchronized void finalizeTd() {
        finalized = true;
        record("TDH.MR.FINALIZE", 0);
    }

    /** {@return MRTD so far: SHA-384 over the file offsets of the pages added, in order} */
    public synchronized String mrtd() {
        try {
            return HexFormat.of().formatHex(((MessageDigest) mrtd.clone()).digest());
        } catch (CloneNotSupportedException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * The guest's {@code TDG.MEM.PAGE.ACCEPT} of one page.
     *
     * @throws ArchitectureFault unless the host augmented the page and it awaits acceptance
     */
    public synchronized void accept(long offset) {
        int p = page(offset);
        switch (state[p]) {
            case PENDING -> {
                state[p] = MAPPED;
                record("TDG.MEM.PAGE.ACCEPT", offset);
            }
            case MAPPED -> throw new ArchitectureFault("TDG.MEM.PAGE.ACCEPT: the page is already accepted");
            case SHARED -> throw new ArchitectureFault("TDG.MEM.PAGE.ACCEPT of a shared GPA");
            default -> throw new ArchitectureFault("TDG.MEM.PAGE.ACCEPT of a page the host has not added (no S-EPT entry)");
        }
    }

    @Override
    protected void toPrivate(long offset, int page) throws OwnerRefusal {
        if (state[page] != SHARED) {
            throw refuse(offset, "TDH.MEM.PAGE.AUG: the S-EPT entry is already present (TDX_EPT_ENTRY_STATE_INCORRECT)");
        }
        if (binding().hostReferences(offset, PAGE) > 0) {
            throw refuse(offset, "the host still maps the page through the shared alias");
        }
        state[page] = PRIVATE_NO_ENTRY;
        if (finalized && cooperative()) {
            // The guest touches the page: EPT violation, the host augments, the guest accepts.
            state[page] = PENDING;
            record("TDH.MEM.PAGE.AUG", offset);
            state[page] = MAPPED;
            record("TDG.MEM.PAGE.ACCEPT", offset);
        }
    }

    @Override
    protected void toShared(long offset, int page) throws OwnerRefusal {
        switch (state[page]) {
            case SHARED -> throw refuse(offset, "MapGPA to shared of a page that is not private");
            case PRIVATE_NO_ENTRY -> {
            }
            default -> {
                if (state[page] == MAPPED && !cooperative()) {
                    throw refuse(offset, "the guest has not asked for the page (TDG.VP.VMCALL<MapGPA>) and still uses it");
                }
                record("TDH.MEM.RANGE.BLOCK", offset);
                record("TDH.MEM.TRACK", offset);
                record("TDH.MEM.PAGE.REMOVE", offset);
            }
        }
        state[page] = SHARED;
    }

    @Override
    protected void populated(long offset, int page) throws OwnerRefusal {
        if (finalized) {
            throw refuse(offset, "TDH.MEM.PAGE.ADD after TDH.MR.FINALIZE");
        }
        if (state[page] != PRIVATE_NO_ENTRY) {
            throw refuse(offset, "TDH.MEM.PAGE.ADD: the S-EPT entry is already present");
        }
        state[page] = MAPPED;
        measure(offset);
        record("TDH.MEM.PAGE.ADD+TDH.MR.EXTEND", offset);
    }
}
