package dev.guestmemfd;

import dev.guestmemfd.models.SevSnpModel;

/** The core's model-based property, with the SevSnpModel as the owner of the whole file. */
class SevSnpModelPropertyTest extends GuestMemoryModelTest {
    @Override
    Binding bindOwnerUnderTest(GuestMemory memory) {
        return memory.bind(new SevSnpModel(), 0, memory.size());
    }

    @Override
    boolean ownerKeepsContent(boolean toPrivate) {
        return new SevSnpModel().keepsContent(toPrivate);
    }
}
