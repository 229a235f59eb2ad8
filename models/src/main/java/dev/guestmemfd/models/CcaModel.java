package dev.guestmemfd.models;

import dev.guestmemfd.OwnerRefusal;

/**
 * A model of Arm CCA's Realm Management Monitor: granules are undelegated (normal world),
 * delegated, or realm data; each realm IPA has a RIPAS of EMPTY or RAM.
 *
 * <ul>
 * <li>to private: {@code RMI_GRANULE_DELEGATE}, then {@code RMI_DATA_CREATE} (copying and
 *     measuring the host's bytes, before {@code RMI_REALM_ACTIVATE}) or
 *     {@code RMI_DATA_CREATE_UNKNOWN} (after: unknown content); the realm sets RIPAS RAM;</li>
 * <li>to shared: the realm sets RIPAS EMPTY ({@code RSI_IPA_STATE_SET}), then
 *     {@code RMI_DATA_DESTROY} and {@code RMI_GRANULE_UNDELEGATE}, which scrubs the granule;
 *     refused while the realm keeps RIPAS RAM;</li>
 * <li>populate: {@code RMI_DATA_CREATE} with measurement, before activation only.</li>
 * </ul>
 */
public final class CcaModel extends ArchitectureModel {
    static final int UNDELEGATED = 0;
    static final int DATA_EMPTY = 1;
    static final int DATA_RAM = 2;

    private boolean active;

    /** A model whose pages take their first state from the file when it is first called. */
    public CcaModel() {
    }

    @Override
    public String architecture() {
        return "Arm CCA";
    }

    @Override
    int stateCount() {
        return 3;
    }

    @Override
    void exportOwn(java.io.DataOutputStream out) throws java.io.IOException {
        out.writeBoolean(active);
    }

    @Override
    Runnable importOwn(java.io.DataInputStream in) throws java.io.IOException {
        boolean a = in.readBoolean();
        return () -> active = a;
    }

    @Override
    protected String stateName(int s) {
        return switch (s) {
            case UNDELEGATED -> "undelegated";
            case DATA_EMPTY -> "data, RIPAS EMPTY";
            default -> "data, RIPAS RAM";
        };
    }

    @Override
    protected int initialState(boolean isPrivate) {
        return isPrivate ? DATA_RAM : UNDELEGATED;
    }

    @Override
    public boolean keepsContent(boolean toPrivate) {
        return toPrivate && !active;
    }

    /** {@code RMI_REALM_ACTIVATE}: the realm runs; its measurement is final. */
    public synchronized void activate() {
        active = true;
        record("RMI_REALM_ACTIVATE", 0);
    }

    /**
     * The realm's {@code RSI_IPA_STATE_SET} for one page.
     *
     * @throws ArchitectureFault for an IPA with no realm data behind it
     */
    public synchronized void setRipas(long offset, boolean ram) {
        int p = page(offset);
        if (state[p] == UNDELEGATED) {
            throw new ArchitectureFault("RSI_IPA_STATE_SET of an IPA with no delegated granule");
        }
        state[p] = ram ? DATA_RAM : DATA_EMPTY;
        record(ram ? "RSI_IPA_STATE_SET(RAM)" : "RSI_IPA_STATE_SET(EMPTY)", offset);
    }

    @Override
    protected void toPrivate(long offset, int page) throws OwnerRefusal {
        if (state[page] != UNDELEGATED) {
            throw refuse(offset, "RMI_GRANULE_DELEGATE: the granule is already delegated (RMI_ERROR_GRANULE)");
        }
        if (binding().hostReferences(offset, PAGE) > 0) {
            throw refuse(offset, "the normal world still maps the granule");
        }
        record("RMI_GRANULE_DELEGATE", offset);
        record(active ? "RMI_DATA_CREATE_UNKNOWN" : "RMI_DATA_CREATE", offset);
        state[page] = DATA_EMPTY;
        if (cooperative()) {
            state[page] = DATA_RAM;
            record("RSI_IPA_STATE_SET(RAM)", offset);
        }
    }

    @Override
    protected void toShared(long offset, int page) throws OwnerRefusal {
        if (state[page] == UNDELEGATED) {
            throw refuse(offset, "RMI_DATA_DESTROY of a granule that holds no realm data");
        }
        if (state[page] == DATA_RAM) {
            if (!cooperative()) {
                throw refuse(offset, "the realm still has RIPAS RAM for the page: it must set it EMPTY first");
            }
            record("RSI_IPA_STATE_SET(EMPTY)", offset);
        }
        record("RMI_DATA_DESTROY", offset);
        record("RMI_GRANULE_UNDELEGATE", offset);
        state[page] = UNDELEGATED;
    }

    @Override
    protected void populated(long offset, int page) throws OwnerRefusal {
        if (active) {
            throw refuse(offset, "RMI_DATA_CREATE with measured content after RMI_REALM_ACTIVATE");
        }
        state[page] = DATA_RAM;
        record("RMI_DATA_CREATE(measured)", offset);
    }
}
