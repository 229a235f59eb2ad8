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
import dev.guestmemfd.migration.MigrationChannel;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * A guest memory file moved over a migration channel where there is no KVM to run a guest:
 * the file as a snapshot stream, its private pages sealed with the channel's session key,
 * and the destination's digest of every page sent back so that both ends know it arrived
 * whole. (A fuller memory-only migration, pre-copy with an architecture model as owner, is to
 * replace this; the channel stays the same.)
 */
final class MemoryOverChannel {
    private static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
    private static final int DIGEST_BYTES = 32;

    private MemoryOverChannel() {
    }

    /**
     * Makes a file of {@code size} bytes with {@code allocatedPercent} of it written: the first
     * half of that shared (host-written bytes), the second private, holding {@code secret}
     * repeated (or bytes from a seeded generator), sends it and checks the destination's digest.
     *
     * @return the source's report as JSON fields; {@code arrived} says whether the digests agree
     */
    static Map<String, Object> send(MigrationChannel channel, long size, int allocatedPercent, byte[] secret) throws IOException {
        try (GuestMemory memory = GuestMemory.create(size, FLAGS, Backing.MEMFD)) {
            Binding owner = memory.bind(new Owner() { }, 0, size);
            long page = GuestMemory.PAGE_SIZE;
            long written = size / 100 * allocatedPercent / page * page;
            long shared = written / 2 / page * page;
            long start = size - written;
            SplittableRandom random = new SplittableRandom(size);
            byte[] chunk = new byte[1 << 20];
            try (HostMapping host = memory.map(0, size)) {
                for (long at = start; at < start + shared; at += chunk.length) {
                    random.nextBytes(chunk);
                    host.write(at, MemorySegment.ofArray(chunk).asSlice(0, Math.min(chunk.length, start + shared - at)));
                }
            }
            long privateBytes = written - shared;
            if (privateBytes > 0) {
                memory.convert(start + shared, privateBytes, Attribute.PRIVATE, Content.UNSPECIFIED);
                for (long at = start + shared; at < size; at += chunk.length) {
                    if (secret != null) {
                        for (int i = 0; i < chunk.length; i++) {
                            chunk[i] = secret[i % secret.length];
                        }
                    } else {
                        random.nextBytes(chunk);
                    }
                    owner.pages().asSlice(at, Math.min(chunk.length, size - at)).copyFrom(MemorySegment.ofArray(chunk).asSlice(0, Math.min(chunk.length, size - at)));
                }
            }
            long allocated = memory.pageCounts().allocated() * page;
            long t0 = System.nanoTime();
            Snapshot.Writer writer = Snapshot.writer(List.of(owner), channel.sealingKey(), channel.out());
            writer.writeAll();
            writer.finish();
            channel.out().flush();
            // After the stream, not before: reading a hole through the owner's view allocates it.
            byte[] digest = digest(owner, size);
            DataInputStream in = new DataInputStream(channel.in());
            byte[] theirs = new byte[DIGEST_BYTES];
            in.readFully(theirs);
            long totalNs = System.nanoTime() - t0;
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("payload", "memory");
            out.put("peer", channel.peerName());
            out.put("memoryBytes", size);
            out.put("allocatedBytes", allocated);
            out.put("privateBytes", privateBytes);
            out.put("pageBytesSent", writer.pageBytes());
            out.put("totalMs", totalNs / 1e6);
            out.put("digest", HexFormat.of().formatHex(digest));
            out.put("arrived", MessageDigest.isEqual(digest, theirs));
            return out;
        }
    }

    /**
     * Receives a file sent by {@link #send}, restores it into a new file of its size, and
     * answers with the digest of every page.
     *
     * @return the destination's report as JSON fields
     */
    static Map<String, Object> receive(MigrationChannel channel) throws IOException {
        Snapshot.Reader reader = Snapshot.reader(channel.sealingKey(), channel.in(), new Snapshot.ReplayGuard(), Snapshot.Framing.EMBEDDED);
        long size = reader.fileSize();
        try (GuestMemory memory = GuestMemory.create(size, FLAGS, Backing.MEMFD)) {
            Binding owner = memory.bind(new Owner() { }, 0, size);
            reader.restore(List.of(owner), state -> {
                throw new IllegalStateException("a memory file carries no owner state");
            });
            long allocated = memory.pageCounts().allocated() * GuestMemory.PAGE_SIZE;
            long privates = memory.pageCounts().privates() * GuestMemory.PAGE_SIZE;
            byte[] digest = digest(owner, size);
            DataOutputStream out = new DataOutputStream(channel.out());
            out.write(digest);
            out.flush();
            Map<String, Object> report = new LinkedHashMap<>();
            report.put("payload", "memory");
            report.put("peer", channel.peerName());
            report.put("memoryBytes", size);
            report.put("allocatedBytes", allocated);
            report.put("privateBytes", privates);
            report.put("digest", HexFormat.of().formatHex(digest));
            return report;
        }
    }

    /** {@return SHA-256 over every byte of the file as its owner sees it, shared and private alike} */
    private static byte[] digest(Binding owner, long size) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            byte[] chunk = new byte[1 << 20];
            for (long at = 0; at < size; at += chunk.length) {
                int n = (int) Math.min(chunk.length, size - at);
                MemorySegment.copy(owner.pages(), ValueLayout.JAVA_BYTE, at, chunk, 0, n);
                sha.update(chunk, 0, n);
            }
            return sha.digest();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }
}
