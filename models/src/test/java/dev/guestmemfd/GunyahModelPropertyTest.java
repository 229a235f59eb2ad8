package dev.guestmemfd;

import dev.guestmemfd.models.GunyahModel;

/** The core's model-based property, with the GunyahModel as the owner of the whole file. */
class GunyahModelPropertyTest extends GuestMemoryModelTest {
    @Override
    Binding bindOwnerUnderTest(GuestMemory memory) {
        return memory.bind(new GunyahModel(), 0, memory.size());
    }

    @Override
    boolean ownerKeepsContent(boolean toPrivate) {
        return new GunyahModel().keepsContent(toPrivate);
    }
}
