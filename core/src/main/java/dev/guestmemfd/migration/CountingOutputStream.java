package dev.guestmemfd.migration;

import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.OutputStream;

/** Counts the bytes written through it: what a migration reports as sent. Not thread-safe. */
public final class CountingOutputStream extends FilterOutputStream {
    private long count;

    /** Counts what goes to {@code out}. */
    public CountingOutputStream(OutputStream out) {
        super(out);
    }

    /** {@return the bytes written so far} */
    public long count() {
        return count;
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
