package dev.guestmemfd.cli;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.PageRun;
import java.util.List;
import java.util.Locale;

/**
 * Draws a file's pages, shared, private and absent, on a terminal and as SVG. A file of any
 * size is drawn as at most {@link #BLOCKS} blocks: each block covers the same number of
 * pages and is drawn as the state most of its pages are in, while its numbers say the share
 * of each state.
 */
final class MemoryMapView {
    static final int BLOCKS = 256;
    static final int PER_LINE = 64;
    static final long PAGE = 4096;

    /** Page counts of one block. */
    record Block(long offset, long pages, long shared, long privates, long absentShared, long absentPrivate) {
        long absent() {
            return absentShared + absentPrivate;
        }

        /**
         * {@return the block's most notable state: private over shared, allocated over absent}
         * A single private page in a block of thousands must still show.
         */
        char state() {
            if (privates - absentPrivate > 0) {
                return 'P';
            }
            if (shared - absentShared > 0) {
                return 'S';
            }
            return privates > 0 ? 'p' : 's';
        }

        /** {@return the share of allocated pages, 0 to 8 eighths, at least 1 when any is} */
        int allocatedEighths() {
            long allocated = pages - absent();
            return allocated == 0 ? 0 : (int) Math.max(1, 8 * allocated / pages);
        }
    }

    private final List<PageRun> runs;
    private final long size;
    private final long pagesPerBlock;
    /** The file's huge page size, or {@link #PAGE}. */
    private final long hugePage;
    private final List<Block> blocks;
    /** File offsets of the poisoned pages, in order: their blocks are drawn as {@code X}. */
    private final List<Long> poisoned;

    MemoryMapView(List<PageRun> runs, long size) {
        this(runs, size, PAGE, List.of());
    }

    /**
     * @param hugePage the file's block size: where larger than a page, its boundaries are drawn
     * @param poisoned file offsets of the poisoned pages
     */
    MemoryMapView(List<PageRun> runs, long size, long hugePage, List<Long> poisoned) {
        this.hugePage = hugePage;
        this.poisoned = List.copyOf(poisoned);
        this.runs = runs;
        this.size = size;
        long pages = size / PAGE;
        this.pagesPerBlock = Math.max(1, (pages + BLOCKS - 1) / BLOCKS);
        this.blocks = blocks();
    }

    private List<Block> blocks() {
        long pages = size / PAGE;
        java.util.ArrayList<Block> out = new java.util.ArrayList<>();
        int ri = 0;
        for (long first = 0; first < pages; first += pagesPerBlock) {
            long end = Math.min(pages, first + pagesPerBlock);
            long shared = 0;
            long privates = 0;
            long absentShared = 0;
            long absentPrivate = 0;
            while (ri < runs.size() && (runs.get(ri).offset() + runs.get(ri).length()) / PAGE <= first) {
                ri++;
            }
            for (int i = ri; i < runs.size() && runs.get(i).offset() / PAGE < end; i++) {
                PageRun r = runs.get(i);
                long n = Math.min(end, (r.offset() + r.length()) / PAGE) - Math.max(first, r.offset() / PAGE);
                boolean isPrivate = r.attribute() == Attribute.PRIVATE;
                if (isPrivate) {
                    privates += n;
                } else {
                    shared += n;
                }
                if (!r.allocated()) {
                    if (isPrivate) {
                        absentPrivate += n;
                    } else {
                        absentShared += n;
                    }
                }
            }
            out.add(new Block(first * PAGE, end - first, shared, privates, absentShared, absentPrivate));
        }
        return out;
    }

    List<Block> blocksView() {
        return blocks;
    }

    /** {@return the state to draw: {@code X} for a block holding a poisoned page, which must show whatever else it holds} */
    private char drawn(Block b) {
        int i = java.util.Collections.binarySearch(poisoned, b.offset());
        int next = i >= 0 ? i : -i - 1;
        return next < poisoned.size() && poisoned.get(next) < b.offset() + b.pages() * PAGE ? 'X' : b.state();
    }

    /** {@return the map for a terminal: coloured when {@code colour}, letters otherwise} */
    String terminal(boolean colour) {
        StringBuilder out = new StringBuilder();
        out.append(String.format(Locale.ROOT, "%s file, %d pages, one block = %d page%s%n",
                human(size), size / PAGE, pagesPerBlock, pagesPerBlock == 1 ? "" : "s"));
        boolean marks = hugePage > PAGE && pagesPerBlock * PAGE < hugePage;
        if (hugePage > PAGE) {
            out.append(marks
                    ? String.format(Locale.ROOT, "%s huge pages (%d), each '|' starts one%n", human(hugePage), size / hugePage)
                    : String.format(Locale.ROOT, "%s huge pages (%d), %d in a block%n", human(hugePage), size / hugePage,
                            pagesPerBlock * PAGE / hugePage));
        }
        for (int i = 0; i < blocks.size(); i += PER_LINE) {
            out.append(String.format(Locale.ROOT, "%12s  ", "0x" + Long.toHexString(blocks.get(i).offset())));
            for (int j = i; j < Math.min(blocks.size(), i + PER_LINE); j++) {
                if (marks && blocks.get(j).offset() % hugePage == 0) {
                    out.append('|');
                }
                char state = drawn(blocks.get(j));
                out.append(colour && state != 'X' ? shaded(blocks.get(j)) : glyph(state, colour));
            }
            out.append('\n');
        }
        out.append("legend: ").append(glyph('S', colour)).append(" shared  ")
                .append(glyph('P', colour)).append(" private  ")
                .append(glyph('s', colour)).append(" shared, absent  ")
                .append(glyph('p', colour)).append(" private, absent");
        if (!poisoned.isEmpty()) {
            out.append("  ").append(glyph('X', colour)).append(" poisoned");
        }
        out.append(colour ? "\n        bar height: the block's share of allocated pages\n"
                : "\n        a block shows its most notable page (private first, then allocated)\n");
        if (!poisoned.isEmpty()) {
            out.append(String.format(Locale.ROOT, "poisoned: %d page%s, refused with EHWPOISON until punched:",
                    poisoned.size(), poisoned.size() == 1 ? "" : "s"));
            poisoned.stream().limit(16).forEach(o -> out.append(" 0x").append(Long.toHexString(o)));
            out.append(poisoned.size() > 16 ? " ...\n" : "\n");
        }
        return out.toString();
    }

    private static final String EIGHTHS = " \u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588";

    /** A bar whose height is the block's allocated share, red when it holds private pages. */
    private static String shaded(Block b) {
        int eighths = b.allocatedEighths();
        String colourCode = b.privates() > 0 ? "\u001b[31m" : "\u001b[32m";
        String bar = eighths == 0 ? "\u2591" : String.valueOf(EIGHTHS.charAt(eighths));
        return colourCode + bar + "\u001b[0m";
    }

    /** {@return the runs of the file, one line each, at most {@code limit} lines} */
    String runs(int limit) {
        StringBuilder out = new StringBuilder();
        int shown = 0;
        for (PageRun r : runs) {
            if (shown++ == limit) {
                out.append(String.format(Locale.ROOT, "  ... %d more runs%n", runs.size() - limit));
                break;
            }
            out.append(String.format(Locale.ROOT, "  0x%08x-0x%08x  %-8s %-9s %s%n", r.offset(), r.offset() + r.length(),
                    r.attribute().name().toLowerCase(Locale.ROOT), r.allocated() ? "allocated" : "absent", human(r.length())));
        }
        return out.toString();
    }

    private static String glyph(char state, boolean colour) {
        if (!colour) {
            return switch (state) {
                case 'S' -> "S";
                case 'P' -> "P";
                case 'p' -> "p";
                case 'X' -> "X";
                default -> ".";
            };
        }
        return switch (state) {
            case 'X' -> "\u001b[1;35mX\u001b[0m";
            case 'S' -> "\u001b[32m\u2588\u001b[0m";
            case 'P' -> "\u001b[31m\u2588\u001b[0m";
            case 'p' -> "\u001b[31m\u2591\u001b[0m";
            default -> "\u001b[32m\u2591\u001b[0m";
        };
    }

    /** {@return the map as a standalone SVG document} */
    String svg() {
        int cell = 12;
        int lines = (blocks.size() + PER_LINE - 1) / PER_LINE;
        int left = 110;
        int width = left + PER_LINE * cell + 10;
        int height = 40 + lines * cell + 40;
        StringBuilder out = new StringBuilder();
        out.append("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.append(String.format(Locale.ROOT,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"monospace\" font-size=\"11\">%n",
                width, height));
        out.append(String.format(Locale.ROOT, "<text x=\"4\" y=\"16\">%s guest memory file, %d pages, one block = %d page(s)</text>%n",
                human(size), size / PAGE, pagesPerBlock));
        for (int i = 0; i < blocks.size(); i++) {
            Block b = blocks.get(i);
            int x = left + (i % PER_LINE) * cell;
            int y = 28 + (i / PER_LINE) * cell;
            if (i % PER_LINE == 0) {
                out.append(String.format(Locale.ROOT, "<text x=\"4\" y=\"%d\">0x%x</text>%n", y + 10, b.offset()));
            }
            out.append(String.format(Locale.ROOT,
                    "<rect class=\"block\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"#ffffff\""
                            + " data-offset=\"%d\" data-pages=\"%d\" data-shared=\"%d\" data-private=\"%d\" data-absent=\"%d\">"
                            + "<title>0x%x: %d pages, %s shared, %s private, %s absent</title></rect>%n",
                    x, y, cell, cell, fill(drawn(b)), b.offset(), b.pages(), b.shared(), b.privates(), b.absent(),
                    b.offset(), b.pages(), percent(b.shared(), b.pages()), percent(b.privates(), b.pages()),
                    percent(b.absent(), b.pages())));
        }
        int ly = 28 + lines * cell + 20;
        String[][] legend = poisoned.isEmpty()
                ? new String[][] {{"S", "shared"}, {"P", "private"}, {"s", "shared, absent"}, {"p", "private, absent"}}
                : new String[][] {{"S", "shared"}, {"P", "private"}, {"s", "shared, absent"}, {"p", "private, absent"},
                        {"X", "poisoned"}};
        for (int i = 0; i < legend.length; i++) {
            int x = 4 + i * 150;
            out.append(String.format(Locale.ROOT, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/>"
                    + "<text x=\"%d\" y=\"%d\">%s</text>%n", x, ly - 9, fill(legend[i][0].charAt(0)), x + 14, ly, legend[i][1]));
        }
        out.append("</svg>\n");
        return out.toString();
    }

    private static String fill(char state) {
        return switch (state) {
            case 'S' -> "#2e9e44";
            case 'P' -> "#c62828";
            case 'p' -> "#f3b3b3";
            case 'X' -> "#4a148c";
            default -> "#b9e4c2";
        };
    }

    private static String percent(long n, long of) {
        return String.format(Locale.ROOT, "%.0f%%", 100.0 * n / of);
    }

    static String human(long bytes) {
        if (bytes >= 1L << 40 && bytes % (1L << 40) == 0) {
            return (bytes >> 40) + " TiB";
        }
        if (bytes >= 1L << 30 && bytes % (1L << 30) == 0) {
            return (bytes >> 30) + " GiB";
        }
        if (bytes >= 1L << 20 && bytes % (1L << 20) == 0) {
            return (bytes >> 20) + " MiB";
        }
        if (bytes >= 1L << 10 && bytes % (1L << 10) == 0) {
            return (bytes >> 10) + " KiB";
        }
        return bytes + " B";
    }
}
