package dev.guestmemfd.testing;

import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import java.util.Set;

/**
 * A user's smallest program: creates one guest memory file and says so. The tests run it in
 * child JVMs to see what a user sees with and without {@code --enable-native-access}.
 */
public final class CreateOneFile {
    private CreateOneFile() {
    }

    /**
     * Creates a 1 MiB file, prints its size, closes it.
     *
     * @param args ignored
     */
    public static void main(String[] args) {
        try (GuestMemory memory = GuestMemory.create(1 << 20, Set.of(Flag.MMAP, Flag.INIT_SHARED))) {
            System.out.println("created " + memory.size() + " bytes");
        }
    }
}
