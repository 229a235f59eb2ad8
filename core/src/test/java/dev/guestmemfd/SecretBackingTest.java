package dev.guestmemfd;

class SecretBackingTest extends GuestMemoryContract {
    @Override
    Backing backing() {
        return Backing.SECRET;
    }

    @Override
    long extraFlags() {
        return Flag.NO_DIRECT_MAP.bit();
    }
}
