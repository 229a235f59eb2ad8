package dev.guestmemfd.models;

import dev.guestmemfd.Binding;
import dev.guestmemfd.Invalidation;
import dev.guestmemfd.OwnerRefusal;

/**
 * A model of arm64 pKVM's stage-2 page ownership: a page is owned by the host, owned by the
 * guest (donated), or owned by the guest and shared back with the host.
 *
 * <ul>
 * <li>to private: {@code __pkvm_host_donate_guest} for a host-owned page, or the guest's
 *     {@code __pkvm_guest_unshare_host} for a page it shared; refused for a page the guest
 *     already owns (double donation) or that the host still maps;</li>
 * <li>to shared: only the guest can share its page ({@code __pkvm_guest_share_host});</li>
 * <li>content crosses intact both ways (no memory encryption);</li>
 * <li>a guest-owned page goes back to the host only when the VM is torn down
 *     ({@code __pkvm_host_reclaim_page}): a punch of private pages is recorded as a violation.</li>
 * </ul>
 */
public final class PkvmModel extends ArchitectureModel {
    static final int HOST_OWNED = 0;
    static final int GUEST_OWNED = 1;
    static final int GUEST_SHARED = 2;

    /** A model whose pages take their first state from the file when it is first called. */
    public PkvmModel() {
    }

    @Override
    public String architecture() {
        return "pKVM";
    }

    @Override
    int stateCount() {
        return 3;
    }

    @Override
    protected String stateName(int s) {
        return switch (s) {
            case HOST_OWNED -> "host-owned";
            case GUEST_OWNED -> "guest-owned";
            default -> "guest-owned, shared with the host";
        };
    }

    @Override
    protected int initialState(boolean isPrivate) {
        return isPrivate ? GUEST_OWNED : HOST_OWNED;
    }

    @Override
    public boolean keepsContent(boolean toPrivate) {
        return true;
    }

    @Override
    protected void toPrivate(long offset, int page) throws OwnerRefusal {
        if (state[page] == GUEST_OWNED) {
            throw refuse(offset, "__pkvm_host_donate_guest: the guest already owns the page (double donation)");
        }
        if (binding().hostReferences(offset, PAGE) > 0) {
            throw refuse(offset, "the host stage-2 still maps the page");
        }
        if (state[page] == GUEST_SHARED) {
            if (!cooperative()) {
                throw refuse(offset, "the page is the guest's: only its __pkvm_guest_unshare_host takes it back from the host");
            }
            record("__pkvm_guest_unshare_host", offset);
        } else {
            record("__pkvm_host_donate_guest", offset);
        }
        state[page] = GUEST_OWNED;
    }

    @Override
    protected void toShared(long offset, int page) throws OwnerRefusal {
        if (state[page] != GUEST_OWNED) {
            throw refuse(offset, "share of a page the guest does not own");
        }
        if (!cooperative()) {
            throw refuse(offset, "the guest has not shared the page (__pkvm_guest_share_host): it is still the guest's");
        }
        state[page] = GUEST_SHARED;
        record("__pkvm_guest_share_host", offset);
    }

    @Override
    protected void populated(long offset, int page) {
        record("image copied before donation", offset);
    }

    @Override
    public synchronized void invalidateBegin(Binding b, long offset, long length, Invalidation why) {
        if (why != Invalidation.PUNCH) {
            return;
        }
        for (long at = offset; at < offset + length; at += PAGE) {
            if (state[page(at)] == GUEST_OWNED) {
                violation("reclaim of a guest-owned page while the guest runs (only __pkvm_host_reclaim_page after teardown)", at);
            }
        }
    }
}
