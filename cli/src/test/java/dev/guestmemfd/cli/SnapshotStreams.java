package dev.guestmemfd.cli;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.Owner;
import dev.guestmemfd.Snapshot;
import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.Arrays;
import java.util.List;
import javax.crypto.SecretKey;

/**
 * Snapshot files made by the library in the test's own JVM, without KVM, laid out as
 * {@code gmem snapshot} writes them: a machine's description, the pages, a vCPU state.
 */
final class SnapshotStreams {
    static final long MEMORY = 64 * GuestMemory.PAGE_SIZE;
    static final byte SHARED_BYTE = 0x5a;

    private SnapshotStreams() {
    }

    /**
     * {@return a stream of the counting guest's description and a file whose pages 4-6 are
     * shared with {@link #SHARED_BYTE}, 16-17 private, 40 a private hole, the rest shared holes}
     */
    static byte[] counterGuest(SecretKey key) throws IOException {
        return counterGuest(key, false);
    }

    /**
     * {@return the stream of {@link #counterGuest(SecretKey)}, with shared page 6 reported
     * failed before the snapshot when {@code failedPage}: it travels as a poisoned mark}
     */
    static byte[] counterGuest(SecretKey key, boolean failedPage) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        long page = GuestMemory.PAGE_SIZE;
        try (GuestMemory m = GuestMemory.create(MEMORY, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD)) {
            Binding owner = m.bind(new Owner() { }, 0, MEMORY);
            try (HostMapping host = m.map(0, MEMORY)) {
                byte[] shared = new byte[(int) (3 * page)];
                Arrays.fill(shared, SHARED_BYTE);
                host.write(4 * page, shared);
            }
            m.convert(16 * page, 2 * page, Attribute.PRIVATE, Content.UNSPECIFIED);
            owner.pages().asSlice(16 * page, 2 * page).fill((byte) 0x5e);
            m.convert(40 * page, page, Attribute.PRIVATE, Content.UNSPECIFIED);
            if (failedPage) {
                m.reportMemoryFailure(6 * page);
            }
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), key, out);
            writer.writeState(description());
            writer.writeAll();
            writer.writeState(new byte[64]);  // stands for the vCPU state
            writer.finish();
        }
        return out.toByteArray();
    }

    /** The KVM owner's machine description: u64 memory, UTF backing, UTF program, u32 vCPUs, u8, u8. */
    private static byte[] description() throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        DataOutputStream out = new DataOutputStream(bytes);
        out.writeLong(MEMORY);
        out.writeUTF("MEMFD");
        out.writeUTF("COUNTER");
        out.writeInt(1);
        out.writeBoolean(false);
        out.writeBoolean(false);
        return bytes.toByteArray();
    }

    /** {@return the index of a byte of the shared pages in a stream: 64 of them in a row} */
    static int indexOfSharedByte(byte[] stream) {
        int run = 0;
        for (int i = 0; i < stream.length; i++) {
            run = stream[i] == SHARED_BYTE ? run + 1 : 0;
            if (run == 64) {
                return i;
            }
        }
        throw new AssertionError("no shared page in the stream");
    }
}
