package dev.guestmemfd.testing;

// The README's smallest program ("Use it from your project"), word for word: the tests check
// the README holds it, and run it in child JVMs to see what a user sees with and without
// --enable-native-access.
// @start region="program"
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import java.util.Set;

public class CreateOneFile {
    public static void main(String[] args) {
        try (GuestMemory memory = GuestMemory.create(1 << 20, Set.of(Flag.MMAP, Flag.INIT_SHARED))) {
            System.out.println("created " + memory.size() + " bytes on " + memory.backing());
        }
    }
}
// @end
