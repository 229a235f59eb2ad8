package dev.guestmemfd;

import dev.guestmemfd.models.PkvmModel;

/** The core's contract, with the PkvmModel as the owner of the whole file. */
class PkvmModelContractTest extends GuestMemoryContract {
    private PkvmModel model;

    @Override
    Backing backing() {
        return Backing.MEMFD;
    }

    @Override
    Binding bindOwnerUnderTest(GuestMemory m) {
        model = new PkvmModel();
        return m.bind(model, 0, m.size());
    }

    @Override
    boolean ownerKeepsContent() {
        return new PkvmModel().keepsContent(true) && new PkvmModel().keepsContent(false);
    }
}
