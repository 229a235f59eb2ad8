package dev.guestmemfd.testing;

import java.io.EOFException;
import java.io.FilterInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;

/**
 * A migration destination's answers as the source would read them from another host, whose
 * {@code System.nanoTime()} has another origin: the u64 that follows the first byte (the
 * destination's u8 "ready", then its u64 acknowledgement) arrives shifted by a fixed amount.
 * What passes after it is untouched. Bytes are handed on as they come: the source reads the
 * first byte long before the acknowledgement exists.
 */
public final class OtherHostClock extends FilterInputStream {
    private static final int ACK_START = 1;
    private static final int ACK_END = ACK_START + Long.BYTES;
    private final long shiftNs;
    private final byte[] ack = new byte[Long.BYTES];
    private long position;

    /**
     * @param answers the destination's answers
     * @param shiftNs how far the other host's clock is from this one's
     */
    public OtherHostClock(InputStream answers, long shiftNs) {
        super(answers);
        this.shiftNs = shiftNs;
    }

    @Override
    public int read() throws IOException {
        if (position < ACK_START || position >= ACK_END) {
            int b = in.read();
            if (b >= 0) {
                position++;
            }
            return b;
        }
        if (position == ACK_START) {
            int n = in.readNBytes(ack, 0, ack.length);
            if (n < ack.length) {
                throw new EOFException("the acknowledgement ended after " + n + " bytes");
            }
            ByteBuffer.wrap(ack).putLong(0, ByteBuffer.wrap(ack).getLong(0) + shiftNs);
        }
        return ack[(int) (position++ - ACK_START)] & 0xff;
    }

    @Override
    public int read(byte[] b, int off, int len) throws IOException {
        if (position >= ACK_END) {
            int n = in.read(b, off, len);
            if (n > 0) {
                position += n;
            }
            return n;
        }
        if (len == 0) {
            return 0;
        }
        int c = read();
        if (c < 0) {
            return -1;
        }
        b[off] = (byte) c;
        return 1;
    }

    @Override
    public long skip(long n) throws IOException {
        throw new IOException("not supported: the answers are read, not skipped");
    }

    @Override
    public int available() {
        return 0;
    }

    @Override
    public boolean markSupported() {
        return false;
    }
}
