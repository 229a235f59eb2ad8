package dev.guestmemfd;

import dev.guestmemfd.models.TdxModel;

/** The core's model-based property, with the TdxModel as the owner of the whole file. */
class TdxModelPropertyTest extends GuestMemoryModelTest {
    @Override
    Binding bindOwnerUnderTest(GuestMemory memory) {
        return memory.bind(new TdxModel(), 0, memory.size());
    }

    @Override
    boolean ownerKeepsContent(boolean toPrivate) {
        return new TdxModel().keepsContent(toPrivate);
    }
}
