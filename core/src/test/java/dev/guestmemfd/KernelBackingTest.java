package dev.guestmemfd;

import dev.guestmemfd.testing.RequiresBacking;

@RequiresBacking(Backing.KERNEL)
class KernelBackingTest extends GuestMemoryContract {
    @Override
    Backing backing() {
        return Backing.KERNEL;
    }
}
