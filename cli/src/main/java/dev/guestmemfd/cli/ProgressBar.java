package dev.guestmemfd.cli;

import java.io.FilterInputStream;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;

/**
 * A progress bar on the terminal for a step that may take more than about a second. It
 * draws nothing until a second has passed, and nothing at all when the output is not a
 * terminal.
 */
final class ProgressBar implements AutoCloseable {
    static final long SHOW_AFTER_NANOS = 1_000_000_000L;
    private static final int WIDTH = 40;

    private final String label;
    private final long total;
    private final PrintStream out;
    private final boolean terminal;
    private final long showAfterNanos;
    private final long start = System.nanoTime();
    private boolean drawn;

    ProgressBar(String label, long total, PrintStream out, boolean terminal, long showAfterNanos) {
        this.label = label;
        this.total = Math.max(1, total);
        this.out = out;
        this.terminal = terminal;
        this.showAfterNanos = showAfterNanos;
    }

    /** {@return a bar on standard error, drawn only when standard output is a terminal} */
    static ProgressBar onTerminal(String label, long total) {
        return new ProgressBar(label, total, System.err, System.console() != null, SHOW_AFTER_NANOS);
    }

    void update(long done) {
        if (!terminal || System.nanoTime() - start < showAfterNanos) {
            return;
        }
        int filled = (int) (WIDTH * Math.min(done, total) / total);
        out.printf("\r%s [%s%s] %3d%%", label, "#".repeat(filled), " ".repeat(WIDTH - filled), 100 * Math.min(done, total) / total);
        out.flush();
        drawn = true;
    }

    /** {@return {@code out}, moving this bar by every byte written through it} */
    OutputStream track(OutputStream out) {
        return new FilterOutputStream(out) {
            private long done;

            @Override
            public void write(int b) throws IOException {
                out.write(b);
                update(++done);
            }

            @Override
            public void write(byte[] b, int off, int len) throws IOException {
                out.write(b, off, len);
                update(done += len);
            }
        };
    }

    /** {@return {@code in}, moving this bar by every byte read through it} */
    InputStream track(InputStream in) {
        return new FilterInputStream(in) {
            private long done;

            @Override
            public int read() throws IOException {
                int b = in.read();
                if (b >= 0) {
                    update(++done);
                }
                return b;
            }

            @Override
            public int read(byte[] b, int off, int len) throws IOException {
                int n = in.read(b, off, len);
                if (n > 0) {
                    update(done += n);
                }
                return n;
            }
        };
    }

    @Override
    public void close() {
        if (drawn) {
            update(total);
            out.println();
        }
    }
}
