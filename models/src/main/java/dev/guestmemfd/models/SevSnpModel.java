package dev.guestmemfd.models;

import dev.guestmemfd.Binding;
import dev.guestmemfd.Invalidation;
import dev.guestmemfd.OwnerRefusal;

/**
 * A model of AMD SEV-SNP's Reverse Map Table (RMP): each page is hypervisor-owned, or
 * assigned to the guest and then validated by the guest ({@code PVALIDATE}).
 *
 * <ul>
 * <li>to private: {@code RMPUPDATE} assigns the page (refused when it is already assigned,
 *     or when the host still maps it: the host would take an RMP fault); the guest then
 *     validates it;</li>
 * <li>to shared: the guest rescinds validation and asks by a page state change request;
 *     {@code RMPUPDATE} makes the page hypervisor-owned again (refused while the guest still
 *     has it validated);</li>
 * <li>populate: {@code SNP_LAUNCH_UPDATE} encrypts and measures pages in place, before
 *     {@code SNP_LAUNCH_FINISH} only;</li>
 * <li>content crosses in place only into the guest and only before {@code SNP_LAUNCH_FINISH}
 *     ({@code PRESERVE}, as KVM grants it: the launch update encrypts the bytes in place); after
 *     it, and towards shared at any time, the memory is encrypted with the guest's key.</li>
 * </ul>
 */
public final class SevSnpModel extends ArchitectureModel {
    static final int HYPERVISOR = 0;
    static final int ASSIGNED = 1;
    static final int VALIDATED = 2;

    private boolean launched;

    /** A model whose pages take their first state from the file when it is first called. */
    public SevSnpModel() {
    }

    @Override
    public String architecture() {
        return "SEV-SNP";
    }

    @Override
    int stateCount() {
        return 3;
    }

    @Override
    void exportOwn(java.io.DataOutputStream out) throws java.io.IOException {
        out.writeBoolean(launched);
    }

    @Override
    Runnable importOwn(java.io.DataInputStream in) throws java.io.IOException {
        boolean l = in.readBoolean();
        return () -> launched = l;
    }

    @Override
    protected String stateName(int s) {
        return switch (s) {
            case HYPERVISOR -> "hypervisor-owned";
            case ASSIGNED -> "assigned";
            default -> "assigned+validated";
        };
    }

    @Override
    protected int initialState(boolean isPrivate) {
        return isPrivate ? ASSIGNED : HYPERVISOR;
    }

    @Override
    public synchronized boolean keepsContent(boolean toPrivate) {
        return toPrivate && !launched;
    }

    /** {@code SNP_LAUNCH_FINISH}: the guest runs; no more launch updates. */
    public synchronized void launchFinish() {
        launched = true;
        record("SNP_LAUNCH_FINISH", 0);
    }

    /**
     * The guest's {@code PVALIDATE} of one page.
     *
     * @throws ArchitectureFault when the page is not assigned to the guest, or already in the
     *                           requested state ({@code FAIL_UNCHANGED})
     */
    public synchronized void pvalidate(long offset, boolean validate) {
        int p = page(offset);
        if (state[p] == HYPERVISOR) {
            throw new ArchitectureFault("PVALIDATE of a hypervisor-owned page: FAIL_INPUT (#VC)");
        }
        if ((state[p] == VALIDATED) == validate) {
            throw new ArchitectureFault("PVALIDATE: FAIL_UNCHANGED");
        }
        state[p] = validate ? VALIDATED : ASSIGNED;
        record(validate ? "PVALIDATE" : "PVALIDATE(rescind)", offset);
    }

    @Override
    protected void toPrivate(long offset, int page) throws OwnerRefusal {
        if (state[page] != HYPERVISOR) {
            throw refuse(offset, "RMPUPDATE: the page is already assigned to the guest (FAIL_INUSE)");
        }
        if (binding().hostReferences(offset, PAGE) > 0) {
            throw refuse(offset, "RMPUPDATE: the host still maps the page and would take an RMP fault");
        }
        state[page] = ASSIGNED;
        record("RMPUPDATE(assigned)", offset);
        if (cooperative()) {
            state[page] = VALIDATED;
            record("PVALIDATE", offset);
        }
    }

    @Override
    protected void toShared(long offset, int page) throws OwnerRefusal {
        if (state[page] == HYPERVISOR) {
            throw refuse(offset, "page state change of a page that is not assigned");
        }
        if (state[page] == VALIDATED) {
            if (!cooperative()) {
                throw refuse(offset, "the guest still has the page validated: it must rescind (PVALIDATE) first");
            }
            record("PVALIDATE(rescind)", offset);
        }
        state[page] = HYPERVISOR;
        record("RMPUPDATE(hypervisor)", offset);
    }

    @Override
    protected void populated(long offset, int page) throws OwnerRefusal {
        if (launched) {
            throw refuse(offset, "SNP_LAUNCH_UPDATE after SNP_LAUNCH_FINISH");
        }
        state[page] = VALIDATED;
        record("SNP_LAUNCH_UPDATE", offset);
    }

    @Override
    public void invalidateBegin(Binding b, long offset, long length, Invalidation why) {
        // Freeing assigned pages is allowed: the hypervisor makes them its own first (RMPUPDATE).
    }
}
