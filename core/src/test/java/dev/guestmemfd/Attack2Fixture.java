package dev.guestmemfd;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;

import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;

/**
 * A small file in every page state, its snapshot stream, and the stream cut into its records
 * by the documented layout ({@code docs/SNAPSHOT.md}), for the Attack2 tests that alter streams.
 */
final class Attack2Fixture {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final int PAGES = 8;
    static final long SIZE = PAGES * PAGE;
    static final int HEADER = 8 + 4 + 8 + 4 + 16;
    static final int END = 1 + 8 + 32 + 16;

    /** Page states of the source: S = shared with bytes, P = private with bytes, h = shared hole, p = private hole. */
    static final String LAYOUT = "SShPPpSh";

    /** A thread per task: the common pool has one worker on two cores, and these tasks block. */
    static final java.util.concurrent.Executor THREADS = r -> Thread.ofPlatform().daemon().name("attack2").start(r);

    static final Owner OWNER = new Owner() {
    };

    private Attack2Fixture() {
    }

    static SecretKey key() {
        try {
            KeyGenerator g = KeyGenerator.getInstance("AES");
            g.init(256);
            return g.generateKey();
        } catch (java.security.GeneralSecurityException e) {
            throw new AssertionError(e);
        }
    }

    static GuestMemory newFile() {
        return GuestMemory.create(SIZE, EnumSet.of(Flag.MMAP, Flag.INIT_SHARED));
    }

    static byte fill(int page) {
        return (byte) (0x41 + page);
    }

    /** Builds the source file: each page as {@link #LAYOUT} says, with bytes {@link #fill}. */
    static GuestMemory source() {
        GuestMemory m = newFile();
        Binding b = bindingOf(m);
        try (HostMapping map = m.map(0, SIZE)) {
            for (int p = 0; p < PAGES; p++) {
                char c = LAYOUT.charAt(p);
                if (c == 'S') {
                    byte[] bytes = new byte[(int) PAGE];
                    Arrays.fill(bytes, fill(p));
                    map.write(p * PAGE, bytes);
                }
            }
        }
        for (int p = 0; p < PAGES; p++) {
            char c = LAYOUT.charAt(p);
            if (c == 'P' || c == 'p') {
                m.convert(p * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            }
            if (c == 'P') {
                b.pages().asSlice(p * PAGE, PAGE).fill(fill(p));
            }
        }
        return m;
    }

    static byte[] stream(GuestMemory source, SecretKey key) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Binding b = bindingOf(source);
        Snapshot.write(b, key, out);
        return out.toByteArray();
    }

    static final java.util.Map<GuestMemory, Binding> BINDINGS_FOR_TESTS = new java.util.concurrent.ConcurrentHashMap<>();

    static Binding bindingOf(GuestMemory m) {
        return BINDINGS_FOR_TESTS.computeIfAbsent(m, x -> x.bind(OWNER, 0, SIZE));
    }

    /** One record of a stream: where it starts and ends, its kind, offset and length field. */
    record Rec(int start, int end, int kind, long offset, long length) {
        int headerEnd() {
            return start + 13;
        }
    }

    /** Splits a stream into its records by the documented layout; the end record is last (kind 0). */
    static List<Rec> records(byte[] s) {
        List<Rec> out = new ArrayList<>();
        ByteBuffer bb = ByteBuffer.wrap(s);
        int at = HEADER;
        while (true) {
            int kind = s[at] & 0xff;
            if (kind == 0) {
                out.add(new Rec(at, at + END, 0, bb.getLong(at + 1), 0));
                return out;
            }
            long offset = bb.getLong(at + 1);
            long length = Integer.toUnsignedLong(bb.getInt(at + 9));
            boolean tagged = bb.getInt(8) >= 4;  // version 4: shared records carry a tag; kind 7, the layout, is sealed
            int body = switch (kind) {
                case 1 -> (int) length + (tagged ? 16 : 0);
                case 2, 5, 7 -> (int) length + 16;
                default -> 0;
            };
            out.add(new Rec(at, at + 13 + body, kind, offset, length));
            at += 13 + body;
        }
    }

    static byte[] record(int kind, long offset, int length, byte[] body) {
        ByteBuffer bb = ByteBuffer.allocate(13 + body.length);
        bb.put((byte) kind).putLong(offset).putInt(length).put(body);
        return bb.array();
    }

    static byte[] concat(byte[]... parts) {
        int n = 0;
        for (byte[] p : parts) {
            n += p.length;
        }
        byte[] out = new byte[n];
        int at = 0;
        for (byte[] p : parts) {
            System.arraycopy(p, 0, out, at, p.length);
            at += p.length;
        }
        return out;
    }

    /** Inserts {@code extra} into {@code s} at {@code at}. */
    static byte[] insert(byte[] s, int at, byte[] extra) {
        return concat(Arrays.copyOfRange(s, 0, at), extra, Arrays.copyOfRange(s, at, s.length));
    }

    static byte[] flip(byte[] s, int at) {
        byte[] c = s.clone();
        c[at] ^= 0x01;
        return c;
    }

    /** The state of a file that must not change: its runs, and the bytes of every page the host may read. */
    record State(List<PageRun> runs, List<String> sharedBytes) {
    }

    static State state(GuestMemory m) {
        List<String> bytes = new ArrayList<>();
        List<PageRun> runs = m.pageRuns();
        try (HostMapping map = m.map(0, SIZE)) {
            for (int p = 0; p < PAGES; p++) {
                long at = p * PAGE;
                boolean allocated = runs.stream().anyMatch(r -> r.allocated() && r.offset() <= at && at < r.offset() + r.length());
                if (allocated && m.attribute(p * PAGE) == Attribute.SHARED) {
                    bytes.add(p + ":" + digest(map.read(p * PAGE, (int) PAGE)));
                }
            }
        }
        return new State(runs, bytes);
    }

    static String digest(byte[] b) {
        int h = Arrays.hashCode(b);
        boolean allSame = true;
        for (byte x : b) {
            allSame &= x == b[0];
        }
        return allSame ? "all " + b[0] : "mixed " + h;
    }

    /** Checks the owner's view of a restored file holds the source's bytes in every page with bytes. */
    static void assertRestored(GuestMemory m) {
        Binding b = bindingOf(m);
        for (int p = 0; p < PAGES; p++) {
            char c = LAYOUT.charAt(p);
            Attribute want = (c == 'P' || c == 'p') ? Attribute.PRIVATE : Attribute.SHARED;
            if (m.attribute(p * PAGE) != want) {
                throw new AssertionError("page " + p + " is " + m.attribute(p * PAGE) + ", want " + want);
            }
            byte expect = (c == 'S' || c == 'P') ? fill(p) : 0;
            MemorySegment page = b.pages().asSlice(p * PAGE, PAGE);
            for (long i = 0; i < PAGE; i += 511) {
                byte got = page.get(ValueLayout.JAVA_BYTE, i);
                if (got != expect) {
                    throw new AssertionError("page " + p + " byte " + i + " is " + got + ", want " + expect);
                }
            }
        }
    }
}
