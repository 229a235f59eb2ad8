package dev.guestmemfd;

import dev.guestmemfd.models.TdxModel;

/** The core's contract, with the TdxModel as the owner of the whole file. */
class TdxModelContractTest extends GuestMemoryContract {
    private TdxModel model;

    @Override
    Backing backing() {
        return Backing.MEMFD;
    }

    @Override
    Binding bindOwnerUnderTest(GuestMemory m) {
        model = new TdxModel();
        return m.bind(model, 0, m.size());
    }

    @Override
    boolean ownerKeepsContent() {
        return new TdxModel().keepsContent(true) && new TdxModel().keepsContent(false);
    }
}
