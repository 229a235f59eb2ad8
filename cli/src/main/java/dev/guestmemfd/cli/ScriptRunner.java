package dev.guestmemfd.cli;

import dev.guestmemfd.Errno;
import dev.guestmemfd.Attribute;
import dev.guestmemfd.Backing;
import dev.guestmemfd.Content;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.HostAccessFault;
import dev.guestmemfd.HostMapping;
import dev.guestmemfd.MapType;
import dev.guestmemfd.Pin;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * Runs the line-oriented guest_memfd scripts of {@code gmem script}: one command per line,
 * one result line per command ({@code ok}, {@code ok ...}, {@code data ...}, {@code err ERRNO}
 * or {@code fault}). The format is in the README and {@code docs/SCRIPTS.md}.
 */
final class ScriptRunner implements AutoCloseable {
    /** A script line that is not a well-formed command. */
    static final class Malformed extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Malformed(String message) {
            super(message);
        }
    }

    private final Backing defaultBacking;
    private String note;
    private GuestMemory memory;
    private final List<HostMapping> maps = new ArrayList<>();
    private final List<Pin> pins = new ArrayList<>();

    /** @param defaultBacking the backing of a {@code create} without {@code backing=}, or null to choose by flags */
    ScriptRunner(Backing defaultBacking) {
        this.defaultBacking = defaultBacking;
    }

    /** {@return the current file, or null} */
    GuestMemory memory() {
        return memory;
    }

    /**
     * Runs one line.
     *
     * @return its result line, or null for a blank or comment line
     * @throws Malformed when the line is not a command of the format
     */
    String execute(String line) {
        int hash = line.indexOf('#');
        String text = (hash >= 0 ? line.substring(0, hash) : line).trim();
        if (text.isEmpty()) {
            return null;
        }
        String[] w = text.split("\\s+");
        try {
            return switch (w[0]) {
                case "create" -> create(w);
                case "stat" -> {
                    args(w, 0, 0);
                    yield "ok size=" + file().size() + " blksize=" + file().blockSize();
                }
                case "fallocate" -> {
                    args(w, 3, 3);
                    fallocate(mode(w[1]), number(w[2]), number(w[3]));
                    yield "ok";
                }
                case "mmap" -> {
                    args(w, 2, 3);
                    MapType type = w.length == 4 ? MapType.valueOf(word(w[3], "shared", "private").toUpperCase(Locale.ROOT)) : MapType.SHARED;
                    maps.add(file().map(number(w[1]), number(w[2]), type));
                    yield "ok";
                }
                case "munmap" -> {
                    args(w, 1, 1);
                    int id = id(w[1], maps);
                    maps.get(id).close();
                    maps.set(id, null);
                    yield "ok";
                }
                case "write" -> {
                    args(w, 4, 4);
                    byte value = byteHex(w[4]);
                    HostMapping map = maps.get(id(w[1], maps));
                    long at = number(w[2]);
                    byte[] data = new byte[length("write", number(w[3]))];
                    Arrays.fill(data, value);
                    if (outside(map, at, data.length)) {
                        yield "fault";
                    }
                    map.write(at, data);
                    yield "ok";
                }
                case "read" -> {
                    args(w, 3, 3);
                    HostMapping map = maps.get(id(w[1], maps));
                    long at = number(w[2]);
                    int length = length("read", number(w[3]));
                    if (outside(map, at, length)) {
                        yield "fault";
                    }
                    yield "data" + runLength(map.read(at, length));
                }
                case "convert" -> {
                    args(w, 4, 4);
                    Attribute target = Attribute.valueOf(word(w[3], "shared", "private").toUpperCase(Locale.ROOT));
                    Content content = Content.valueOf(word(w[4], "unspecified", "zero", "preserve").toUpperCase(Locale.ROOT));
                    file().convert(number(w[1]), number(w[2]), target, content);
                    yield "ok";
                }
                case "pin" -> {
                    args(w, 2, 2);
                    pins.add(file().pin(number(w[1]), number(w[2])));
                    yield "ok";
                }
                case "unpin" -> {
                    args(w, 1, 1);
                    int id = id(w[1], pins);
                    pins.get(id).close();
                    pins.set(id, null);
                    yield "ok";
                }
                case "poison" -> {
                    args(w, 1, 1);
                    file().reportMemoryFailure(number(w[1]));  // a second report of a page is no error
                    yield "ok";
                }
                case "close" -> {
                    args(w, 0, 0);
                    file();
                    closeFile();
                    yield "ok";
                }
                default -> throw new Malformed("unknown command '" + w[0] + "'");
            };
        } catch (NumberFormatException | ArithmeticException e) {
            throw new Malformed("bad number in '" + text + "': " + e.getMessage());
        } catch (HostAccessFault fault) {
            return "fault";
        } catch (GuestMemoryException e) {
            if (w[0].equals("create") && e.errno().equals(Errno.ENODEV)) {
                note = e.getMessage();  // which backing, and why this host lacks it
            }
            return "err " + e.errno();
        }
    }

    /**
     * {@return what the last line's refusal needs said beyond its errno, once, or null} A
     * create refused ENODEV says which backing this host lacks and why; a negative length
     * says so. Standard output keeps one result per line; this goes to standard error.
     */
    String takeNote() {
        String n = note;
        note = null;
        return n;
    }

    /** {@return a read or write length: at most 2 GiB, the largest array} @throws GuestMemoryException EINVAL when negative */
    private int length(String op, long length) {
        if (length < 0) {
            note = op + ": length " + length + " is negative";
            throw new GuestMemoryException(Errno.EINVAL, op, "negative length " + length, -1);
        }
        if (length > Integer.MAX_VALUE - 8) {
            throw new Malformed(op + " of " + length + " bytes: at most 2 GiB at once");
        }
        return (int) length;
    }

    /** {@return a byte written as one or two hex digits, 0 to ff} */
    static byte byteHex(String w) {
        String digits = w.startsWith("0x") || w.startsWith("0X") ? w.substring(2) : w;
        if (!digits.matches("[0-9a-fA-F]{1,2}")) {
            throw new Malformed("'" + w + "' is not a byte: one or two hex digits, 00 to ff");
        }
        return (byte) Integer.parseInt(digits, 16);
    }

    /** Bytes allocated per call when a large allocation shows its progress. */
    static final long CHUNK = 256L << 20;

    /**
     * Allocations of gigabytes take seconds: they go in chunks under a progress bar. The first
     * chunk is checked like the whole (it is the same call), so errors are the same.
     */
    private void fallocate(int mode, long offset, long length) {
        GuestMemory m = file();
        if (mode != GuestMemory.KEEP_SIZE || length <= CHUNK || offset % GuestMemory.PAGE_SIZE != 0
                || length % GuestMemory.PAGE_SIZE != 0 || offset < 0 || offset > m.size() || length > m.size() - offset) {
            m.fallocate(mode, offset, length);
            return;
        }
        try (ProgressBar bar = ProgressBar.onTerminal("allocating " + MemoryMapView.human(length), length)) {
            for (long done = 0; done < length; done += CHUNK) {
                m.fallocate(mode, offset + done, Math.min(CHUNK, length - done));
                bar.update(done + Math.min(CHUNK, length - done));
            }
        }
    }

    private String create(String[] w) {
        if (w.length < 2) {
            throw new Malformed("create needs a SIZE");
        }
        long size = number(w[1]);
        long flags = 0;
        Backing backing = defaultBacking;
        boolean hugetlb = false;
        String pageSize = null;
        for (int i = 2; i < w.length; i++) {
            String a = w[i];
            if (a.equals("mmap")) {
                flags |= Flag.MMAP.bit();
            } else if (a.equals("init_shared")) {
                flags |= Flag.INIT_SHARED.bit();
            } else if (a.equals("no_direct_map")) {
                flags |= Flag.NO_DIRECT_MAP.bit();
            } else if (a.startsWith("flags=")) {
                String hex = a.substring(6);
                flags |= Long.parseUnsignedLong(hex.startsWith("0x") ? hex.substring(2) : hex, 16);
            } else if (a.startsWith("backing=")) {
                backing = switch (a.substring(8)) {
                    case "memfd" -> Backing.MEMFD;
                    case "secret" -> Backing.SECRET;
                    case "kernel" -> Backing.KERNEL;
                    case "hugetlb" -> Backing.HUGETLB_2M;  // pagesize= may make it 1 GiB
                    default -> throw new Malformed("backing must be memfd, secret, kernel or hugetlb");
                };
                hugetlb = backing == Backing.HUGETLB_2M;
            } else if (a.startsWith("pagesize=")) {
                pageSize = a.substring(9);
                if (!pageSize.equals("2M") && !pageSize.equals("1G")) {
                    throw new Malformed("pagesize must be 2M or 1G");
                }
            } else {
                throw new Malformed("unknown create option '" + a + "'");
            }
        }
        if (pageSize != null) {
            if (!hugetlb) {
                throw new Malformed("pagesize= goes with backing=hugetlb");
            }
            backing = pageSize.equals("1G") ? Backing.HUGETLB_1G : Backing.HUGETLB_2M;
        }
        closeFile();
        if (backing == null) {
            backing = (flags & Flag.NO_DIRECT_MAP.bit()) != 0 ? Backing.SECRET : Backing.MEMFD;
        }
        memory = GuestMemory.create(size, flags, backing);
        return "ok";
    }

    private GuestMemory file() {
        if (memory == null) {
            throw new GuestMemoryException(Errno.EBADF, "script", "no file: create one first", -1);
        }
        return memory;
    }

    private static boolean outside(HostMapping map, long at, long length) {
        // Beyond the mapping is beyond the VMA: the kernel's SIGSEGV, a fault all the same.
        return at < 0 || length < 0 || at > map.length() - length;
    }

    private static void args(String[] w, int min, int max) {
        if (w.length - 1 < min || w.length - 1 > max) {
            throw new Malformed(w[0] + " takes " + (min == max ? min : min + " to " + max) + " arguments");
        }
    }

    private static String word(String w, String... allowed) {
        for (String a : allowed) {
            if (a.equals(w)) {
                return w;
            }
        }
        throw new Malformed("expected one of " + String.join(", ", allowed) + ", got '" + w + "'");
    }

    private static <T> int id(String w, List<T> list) {
        long id = number(w);
        if (id < 1 || id > list.size() || list.get((int) id - 1) == null) {
            throw new GuestMemoryException(Errno.EINVAL, "script", "no such id " + w, -1);
        }
        return (int) id - 1;
    }

    static long number(String w) {
        try {
            if (w.startsWith("0x") || w.startsWith("0X")) {
                return Long.parseUnsignedLong(w.substring(2), 16);
            }
            if (w.startsWith("-0x")) {
                return -Long.parseLong(w.substring(3), 16);
            }
            return Long.parseLong(w);
        } catch (NumberFormatException e) {
            throw new Malformed("'" + w + "' is not a decimal or 0x hex number");
        }
    }

    private static int mode(String w) {
        if (Character.isDigit(w.charAt(0))) {
            return Math.toIntExact(number(w));
        }
        int mode = 0;
        for (String m : w.split(",")) {
            mode |= switch (m) {
                case "keep_size" -> 0x01;
                case "punch_hole" -> 0x02;
                case "collapse_range" -> 0x08;
                case "zero_range" -> 0x10;
                default -> throw new Malformed("unknown fallocate mode '" + m + "'");
            };
        }
        return mode;
    }

    /** {@return the bytes as run-length groups, e.g. {@code " aa*4096 00*8192"}} */
    static String runLength(byte[] data) {
        StringBuilder out = new StringBuilder();
        int i = 0;
        while (i < data.length) {
            int j = i;
            while (j < data.length && data[j] == data[i]) {
                j++;
            }
            out.append(String.format(Locale.ROOT, " %02x*%d", data[i] & 0xff, j - i));
            i = j;
        }
        return out.toString();
    }

    private void closeFile() {
        for (HostMapping m : maps) {
            if (m != null) {
                m.close();
            }
        }
        maps.clear();
        for (Pin p : pins) {
            if (p != null) {
                p.close();
            }
        }
        pins.clear();
        if (memory != null) {
            memory.close();
            memory = null;
        }
    }

    @Override
    public void close() {
        closeFile();
    }
}
