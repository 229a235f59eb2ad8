package dev.guestmemfd;

import dev.guestmemfd.models.CcaModel;

/** The core's model-based property, with the CcaModel as the owner of the whole file. */
class CcaModelPropertyTest extends GuestMemoryModelTest {
    @Override
    Binding bindOwnerUnderTest(GuestMemory memory) {
        return memory.bind(new CcaModel(), 0, memory.size());
    }

    @Override
    boolean ownerKeepsContent(boolean toPrivate) {
        return new CcaModel().keepsContent(toPrivate);
    }
}
