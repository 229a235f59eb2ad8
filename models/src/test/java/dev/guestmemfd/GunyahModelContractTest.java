package dev.guestmemfd;

import dev.guestmemfd.models.GunyahModel;

/** The core's contract, with the GunyahModel as the owner of the whole file. */
class GunyahModelContractTest extends GuestMemoryContract {
    private GunyahModel model;

    @Override
    Backing backing() {
        return Backing.MEMFD;
    }

    @Override
    Binding bindOwnerUnderTest(GuestMemory m) {
        model = new GunyahModel();
        return m.bind(model, 0, m.size());
    }

    @Override
    boolean ownerKeepsContent() {
        return new GunyahModel().keepsContent(true) && new GunyahModel().keepsContent(false);
    }
}
