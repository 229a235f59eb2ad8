package dev.guestmemfd.cli;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.kvm.GuestLayout;
import dev.guestmemfd.kvm.GuestProgram;
import dev.guestmemfd.kvm.Machine;
import dev.guestmemfd.kvm.Memslot;
import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * How `gmem` checks that a guest carried on after it moved (a lazy restore, a post-copy): its
 * ticks follow on, and its memory equals the copy it is compared with, page by page.
 */
final class GuestComparison {
    private GuestComparison() {
    }

    /** {@return true when each tick is the one before it plus one (modulo 2^32): the guest skipped and repeated nothing} */
    static boolean ticksFollow(List<Long> ticks) {
        for (int i = 1; i < ticks.size(); i++) {
            if (ticks.get(i) != ((ticks.get(i - 1) + 1) & 0xffffffffL)) {
                return false;
            }
        }
        return true;
    }

    /**
     * {@return the pages whose attribute or bytes differ between the two machines' memory, the
     * counting guest's count pages aside} Read through the owner's view (the memslots' bindings),
     * after the lazy restore completed, so no Java read meets a page not yet there; private pages
     * of a guest_memfd cannot be read by the host, so there only their attributes are compared.
     */
    static long differingPages(Machine eager, Machine lazy) {
        GuestMemory a = eager.memory();
        GuestMemory b = lazy.memory();
        long page = GuestMemory.PAGE_SIZE;
        boolean readPrivate = a.backing() != Backing.KERNEL && b.backing() != Backing.KERNEL;
        long differing = 0;
        for (long at = 0; at < a.size(); at += page) {
            if (a.attribute(at) != b.attribute(at)) {
                differing++;
                continue;
            }
            if (isCountPage(eager.config(), at) || (a.attribute(at) == Attribute.PRIVATE && !readPrivate)) {
                continue;
            }
            if (ownerPage(eager, at).mismatch(ownerPage(lazy, at)) >= 0) {
                differing++;
            }
        }
        return differing;
    }

    /** {@return true for the page the counting guest keeps vCPU i's count in: the start of region i} */
    private static boolean isCountPage(Machine.Config config, long offset) {
        if (config.program() != GuestProgram.COUNTER) {
            return false;
        }
        for (int i = 0; i < config.vcpus(); i++) {
            if (offset == GuestLayout.region(i)) {
                return true;
            }
        }
        return false;
    }

    private static MemorySegment ownerPage(Machine machine, long offset) {
        for (Memslot slot : machine.memslots()) {
            long from = slot.binding().offset();
            if (offset >= from && offset - from < slot.binding().length()) {
                return slot.binding().pages().asSlice(offset - from, GuestMemory.PAGE_SIZE);
            }
        }
        throw new IllegalStateException("no memslot covers offset " + offset);
    }
}
