package dev.guestmemfd.kvm;

import dev.guestmemfd.Backing;
import dev.guestmemfd.Binding;
import dev.guestmemfd.Snapshot;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.net.Socket;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.MessageDigest;
import java.security.PublicKey;
import java.security.spec.X509EncodedKeySpec;
import java.util.List;
import javax.crypto.KeyAgreement;
import javax.crypto.SecretKey;
import javax.crypto.spec.SecretKeySpec;

/**
 * Stop-and-copy migration of a paused {@link Machine} to another process over a socket: the
 * two owners agree on a key (X25519, then SHA-256), the sender sends the configuration,
 * each vCPU's registers and the memory as a {@link Snapshot} (private pages sealed), and the
 * receiver builds the same machine, restores it, and answers with the moment it can resume.
 *
 * <p>Wire format: both sides send their X25519 public key (u16 length, X.509 bytes); then the
 * sender: u64 memory size, UTF backing, UTF program, u32 vCPUs, per vCPU 144 bytes of
 * {@code kvm_regs} and 312 of {@code kvm_sregs}, then the snapshot stream; the receiver
 * answers u64 {@code System.nanoTime()} once restored (the same monotonic clock on one host).
 */
public final class Migration {
    private Migration() {
    }

    /**
     * What a migration cost.
     *
     * @param pausedToRestoredNs from the source's pause to the destination being ready to run
     * @param bytesSent          bytes the sender wrote, handshake included
     * @param memoryBytes        the guest's memory size
     */
    public record Report(long pausedToRestoredNs, long bytesSent, long memoryBytes) { }

    /** Agrees on an AES-256 key with the other side of the socket. */
    static SecretKey agree(DataInputStream in, DataOutputStream out) throws IOException {
        try {
            KeyPair mine = KeyPairGenerator.getInstance("X25519").generateKeyPair();
            byte[] encoded = mine.getPublic().getEncoded();
            out.writeShort(encoded.length);
            out.write(encoded);
            out.flush();
            byte[] theirs = new byte[in.readUnsignedShort()];
            in.readFully(theirs);
            PublicKey other = KeyFactory.getInstance("X25519").generatePublic(new X509EncodedKeySpec(theirs));
            KeyAgreement agreement = KeyAgreement.getInstance("X25519");
            agreement.init(mine.getPrivate());
            agreement.doPhase(other, true);
            byte[] secret = MessageDigest.getInstance("SHA-256").digest(agreement.generateSecret());
            return new SecretKeySpec(secret, "AES");
        } catch (GeneralSecurityException e) {
            throw new IOException("key agreement failed: " + e.getMessage(), e);
        }
    }

    /**
     * Sends a paused machine. It must not run again: the guest now lives on the other side.
     *
     * @param pausedAt {@code System.nanoTime()} when the machine was paused
     */
    public static Report send(Machine machine, Socket socket, long pausedAt) throws IOException {
        CountingStream counting = new CountingStream(socket.getOutputStream());
        DataOutputStream out = new DataOutputStream(new java.io.BufferedOutputStream(counting, 1 << 16));
        DataInputStream in = new DataInputStream(socket.getInputStream());
        SecretKey key = agree(in, out);
        Machine.Config config = machine.config();
        out.writeLong(config.memorySize());
        out.writeUTF(config.backing().name());
        out.writeUTF(config.program().name());
        out.writeInt(config.vcpus());
        try (Arena arena = Arena.ofConfined()) {
            for (Vcpu vcpu : machine.vcpus()) {
                out.write(vcpu.registers().toSegment(arena).toArray(ValueLayout.JAVA_BYTE));
                out.write(vcpu.specialRegisters().toSegment(arena).toArray(ValueLayout.JAVA_BYTE));
            }
        }
        List<Binding> owners = machine.memslots().stream().map(Memslot::binding).toList();
        Snapshot.write(owners, key, out);
        out.flush();
        long restoredAt = in.readLong();
        return new Report(restoredAt - pausedAt, counting.count, config.memorySize());
    }

    /**
     * Receives a machine: builds it, restores memory and vCPU state, and tells the sender.
     * The caller runs it.
     */
    public static Machine receive(Kvm kvm, Socket socket) throws IOException {
        DataInputStream in = new DataInputStream(new java.io.BufferedInputStream(socket.getInputStream(), 1 << 16));
        DataOutputStream out = new DataOutputStream(socket.getOutputStream());
        SecretKey key = agree(in, out);
        long memorySize = in.readLong();
        Backing backing = Backing.valueOf(in.readUTF());
        GuestProgram program = GuestProgram.valueOf(in.readUTF());
        int vcpus = in.readInt();
        Machine.Config config = Machine.Config.of(program, backing, vcpus).withMemorySize(memorySize);
        Machine machine = Machine.bootForRestore(kvm, config);
        try {
            try (Arena arena = Arena.ofConfined()) {
                for (Vcpu vcpu : machine.vcpus()) {
                    byte[] regs = new byte[(int) Registers.LAYOUT.byteSize()];
                    in.readFully(regs);
                    byte[] sregs = new byte[(int) SpecialRegisters.LAYOUT.byteSize()];
                    in.readFully(sregs);
                    vcpu.setSpecialRegisters(SpecialRegisters.from(copy(arena, sregs)));
                    vcpu.setRegisters(Registers.from(copy(arena, regs)));
                }
            }
            List<Binding> owners = machine.memslots().stream().map(Memslot::binding).toList();
            Snapshot.restore(owners, key, in, new Snapshot.ReplayGuard());
            out.writeLong(System.nanoTime());
            out.flush();
            return machine;
        } catch (IOException | RuntimeException e) {
            machine.close();
            throw e;
        }
    }

    private static MemorySegment copy(Arena arena, byte[] bytes) {
        MemorySegment s = arena.allocate(bytes.length, 8);
        MemorySegment.copy(MemorySegment.ofArray(bytes), 0, s, 0, bytes.length);
        return s;
    }

    /** Counts the bytes written through it. */
    private static final class CountingStream extends FilterOutputStream {
        long count;

        CountingStream(OutputStream out) {
            super(out);
        }

        @Override
        public void write(int b) throws IOException {
            out.write(b);
            count++;
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            out.write(b, off, len);
            count += len;
        }
    }
}
