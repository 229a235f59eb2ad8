package dev.guestmemfd.migration;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Errno;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;

/**
 * What the destination of a memory-only migration needs before the pages come: the file to
 * create and the kinds of state that will follow them. It travels as the stream's first
 * owner state record: u64 size, u64 flag bits, UTF backing, u16 count, then each kind as UTF.
 *
 * @param size    the file's size in bytes
 * @param flags   the file's creation flags
 * @param backing where the source's pages came from
 * @param carried the {@link CarriedState#kind()} of each state that follows the pages, in order
 */
public record FileDescription(long size, Set<Flag> flags, Backing backing, List<String> carried) {
    /** Copies the sets it is given. */
    public FileDescription {
        flags = flags.isEmpty() ? Set.of() : Set.copyOf(EnumSet.copyOf(flags));
        carried = List.copyOf(carried);
    }

    /** {@return the description of {@code memory} followed by {@code carried}} */
    static FileDescription of(GuestMemory memory, List<? extends CarriedState> carried) {
        return new FileDescription(memory.size(), memory.flags(), memory.backing(),
                carried.stream().map(CarriedState::kind).toList());
    }

    /** {@return the flags as the bits {@link GuestMemory#create(long, long, Backing)} takes} */
    public long flagBits() {
        long bits = 0;
        for (Flag f : flags) {
            bits |= f.bit();
        }
        return bits;
    }

    /** {@return a new empty file as described, on the source's backing} */
    public GuestMemory create() {
        return GuestMemory.create(size, flagBits(), backing);
    }

    byte[] encode() {
        try {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            DataOutputStream out = new DataOutputStream(bytes);
            out.writeLong(size);
            out.writeLong(flagBits());
            out.writeUTF(backing.name());
            out.writeShort(carried.size());
            for (String kind : carried) {
                out.writeUTF(kind);
            }
            return bytes.toByteArray();
        } catch (IOException e) {
            throw new IllegalStateException("a byte array stream failed", e);
        }
    }

    /**
     * {@return the description in {@code record}}
     *
     * @throws GuestMemoryException {@code EBADMSG} when it is not one {@link #encode()} writes
     */
    static FileDescription decode(byte[] record) {
        try {
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(record));
            long size = in.readLong();
            long bits = in.readLong();
            Backing backing = Backing.valueOf(in.readUTF());
            int count = in.readUnsignedShort();
            List<String> kinds = new ArrayList<>(count);
            for (int i = 0; i < count; i++) {
                kinds.add(in.readUTF());
            }
            if (in.available() != 0) {
                throw new IOException("bytes after the description");
            }
            Set<Flag> flags = EnumSet.noneOf(Flag.class);
            for (Flag f : Flag.values()) {
                if ((bits & f.bit()) != 0) {
                    flags.add(f);
                    bits &= ~f.bit();
                }
            }
            if (bits != 0) {
                throw new IOException("unknown flag bits 0x" + Long.toHexString(bits));
            }
            return new FileDescription(size, flags, backing, kinds);
        } catch (IOException | IllegalArgumentException e) {
            throw new GuestMemoryException(Errno.EBADMSG, "migration", "the file's description does not read: "
                    + e.getMessage(), -1);
        }
    }
}
