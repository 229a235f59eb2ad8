package dev.guestmemfd;

import dev.guestmemfd.models.SevSnpModel;

/** The core's contract, with the SevSnpModel as the owner of the whole file. */
class SevSnpModelContractTest extends GuestMemoryContract {
    private SevSnpModel model;

    @Override
    Backing backing() {
        return Backing.MEMFD;
    }

    @Override
    Binding bindOwnerUnderTest(GuestMemory m) {
        model = new SevSnpModel();
        return m.bind(model, 0, m.size());
    }

    @Override
    boolean ownerKeepsContent() {
        return new SevSnpModel().keepsContent(true) && new SevSnpModel().keepsContent(false);
    }
}
