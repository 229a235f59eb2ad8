package dev.guestmemfd;

import dev.guestmemfd.models.CcaModel;

/** The core's contract, with the CcaModel as the owner of the whole file. */
class CcaModelContractTest extends GuestMemoryContract {
    private CcaModel model;

    @Override
    Backing backing() {
        return Backing.MEMFD;
    }

    @Override
    Binding bindOwnerUnderTest(GuestMemory m) {
        model = new CcaModel();
        return m.bind(model, 0, m.size());
    }

    @Override
    boolean ownerKeepsContent() {
        return new CcaModel().keepsContent(true) && new CcaModel().keepsContent(false);
    }
}
