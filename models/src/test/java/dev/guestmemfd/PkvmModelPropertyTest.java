package dev.guestmemfd;

import dev.guestmemfd.models.PkvmModel;

/** The core's model-based property, with the PkvmModel as the owner of the whole file. */
class PkvmModelPropertyTest extends GuestMemoryModelTest {
    @Override
    Binding bindOwnerUnderTest(GuestMemory memory) {
        return memory.bind(new PkvmModel(), 0, memory.size());
    }

    @Override
    boolean ownerKeepsContent(boolean toPrivate) {
        return new PkvmModel().keepsContent(toPrivate);
    }
}
