package dev.guestmemfd.models;

import dev.guestmemfd.OwnerRefusal;

/**
 * A model of Gunyah's memory parcels, whose access lists say which VMs may reach a page:
 * the host alone, shared with the guest ({@code MEM_SHARE}), lent to the guest alone
 * ({@code MEM_LEND}), or donated ({@code MEM_DONATE}, never to return).
 *
 * <ul>
 * <li>to private: the shared parcel is reclaimed ({@code MEM_RECLAIM}, which needs the guest
 *     to have released it), then lent; refused for a page already lent or donated, or that
 *     the host still maps;</li>
 * <li>to shared: the lent parcel is reclaimed (refused while the guest still has it
 *     accepted), then shared; donated pages never come back;</li>
 * <li>content crosses intact both ways.</li>
 * </ul>
 */
public final class GunyahModel extends ArchitectureModel {
    static final int HOST_ONLY = 0;
    static final int SHARED = 1;
    static final int LENT = 2;
    static final int DONATED = 3;

    /** A model whose pages take their first state from the file when it is first called. */
    public GunyahModel() {
    }

    @Override
    public String architecture() {
        return "Gunyah";
    }

    @Override
    int stateCount() {
        return 4;
    }

    @Override
    protected String stateName(int s) {
        return switch (s) {
            case HOST_ONLY -> "host only";
            case SHARED -> "shared (host, guest)";
            case LENT -> "lent (guest)";
            default -> "donated (guest)";
        };
    }

    @Override
    protected int initialState(boolean isPrivate) {
        return isPrivate ? LENT : SHARED;
    }

    @Override
    public boolean keepsContent(boolean toPrivate) {
        return true;
    }

    /**
     * The host's {@code MEM_DONATE} of a lent page: the guest keeps it for good.
     *
     * @throws ArchitectureFault unless the page is lent to the guest
     */
    public synchronized void donate(long offset) {
        int p = page(offset);
        if (state[p] != LENT) {
            throw new ArchitectureFault("MEM_DONATE of a page that is not lent to the guest");
        }
        state[p] = DONATED;
        record("MEM_DONATE", offset);
    }

    @Override
    protected void toPrivate(long offset, int page) throws OwnerRefusal {
        if (state[page] == LENT || state[page] == DONATED) {
            throw refuse(offset, "MEM_LEND: the page is already the guest's (double assignment)");
        }
        if (binding().hostReferences(offset, PAGE) > 0) {
            throw refuse(offset, "MEM_LEND: the host still maps the page; lending needs it unmapped");
        }
        if (state[page] == SHARED) {
            if (!cooperative()) {
                throw refuse(offset, "MEM_RECLAIM: the guest has not released the shared parcel");
            }
            record("MEM_RELEASE(guest)", offset);
            record("MEM_RECLAIM", offset);
        }
        record("MEM_LEND", offset);
        state[page] = LENT;
        if (cooperative()) {
            record("MEM_ACCEPT(guest)", offset);
        }
    }

    @Override
    protected void toShared(long offset, int page) throws OwnerRefusal {
        if (state[page] == DONATED) {
            throw refuse(offset, "MEM_RECLAIM: donated memory never returns");
        }
        if (state[page] != LENT) {
            throw refuse(offset, "MEM_RECLAIM of a page that is not lent");
        }
        if (!cooperative()) {
            throw refuse(offset, "MEM_RECLAIM: the guest still uses the page (it has not released the parcel)");
        }
        record("MEM_RELEASE(guest)", offset);
        record("MEM_RECLAIM", offset);
        record("MEM_SHARE", offset);
        state[page] = SHARED;
    }

    @Override
    protected void populated(long offset, int page) {
        record("image loaded into the lent parcel", offset);
    }
}
