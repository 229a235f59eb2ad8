package dev.guestmemfd.migration;

import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemoryException;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * The messages of a post-copy migration, one direction of them: each is sealed (AES-256-GCM)
 * under a key derived from the session key for post-copy alone, with a nonce made of the
 * direction and the message's number in it. A message altered, dropped, reordered or
 * replayed (from this session or another) does not open: the receiver sees {@code EBADMSG}.
 *
 * <p>On the wire: u32 length of the sealed body, then the body; opened, the body is u8 type
 * and the type's payload.
 *
 * @implSpec One thread sends and one receives at a time (callers lock around {@link #send}).
 */
final class PostCopyFrames {
    /** Source to destination. */
    static final byte DESCRIBE = 1;
    static final byte LAYOUT = 2;
    static final byte PAGES = 3;
    static final byte RELEASED = 4;
    /** Destination to source. */
    static final byte READY = 10;
    static final byte REQUEST = 11;
    static final byte RESIDENT = 12;
    static final byte RESUMED = 13;

    /** The largest body: a 64 KiB extent with its header, or a layout of many runs. */
    static final int MAX_BODY = 64 << 20;
    private static final int TAG_BITS = 128;
    private static final byte[] LABEL = "guestmemfd post-copy frames v1".getBytes(StandardCharsets.US_ASCII);

    /** A message opened: its type and payload. */
    record Frame(byte type, ByteBuffer payload) {
    }

    private final SecretKey key;
    private final byte sendDirection;
    private final byte receiveDirection;
    private final DataOutputStream out;
    private final DataInputStream in;
    private final String peer;
    private long sent;
    private long received;

    /**
     * @param fromSource whether this end is the source: the directions of its nonces
     */
    PostCopyFrames(SecretKey sessionKey, boolean fromSource, InputStream in, OutputStream out, String peer) {
        this.key = derive(sessionKey);
        this.sendDirection = (byte) (fromSource ? 'S' : 'D');
        this.receiveDirection = (byte) (fromSource ? 'D' : 'S');
        this.in = new DataInputStream(in);
        this.out = new DataOutputStream(out);
        this.peer = peer;
    }

    /** A key of its own: the session key also seals snapshot records, whose nonces must never meet these. */
    private static SecretKey derive(SecretKey sessionKey) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(sessionKey.getEncoded(), "HmacSHA256"));
            return new SecretKeySpec(mac.doFinal(LABEL), "AES");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("the JDK lacks HmacSHA256", e);
        }
    }

    private static GCMParameterSpec nonce(byte direction, long number) {
        byte[] iv = new byte[12];
        iv[0] = direction;
        ByteBuffer.wrap(iv, 4, 8).putLong(number);
        return new GCMParameterSpec(TAG_BITS, iv);
    }

    /** Seals and sends one message, and flushes it. */
    void send(byte type, byte[] payload, int length) throws IOException {
        byte[] plain = new byte[1 + length];
        plain[0] = type;
        System.arraycopy(payload, 0, plain, 1, length);
        byte[] sealed;
        try {
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
            c.init(Cipher.ENCRYPT_MODE, key, nonce(sendDirection, sent++));
            sealed = c.doFinal(plain);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM failed to seal", e);
        } finally {
            java.util.Arrays.fill(plain, (byte) 0);  // page bytes do not linger on the heap
        }
        out.writeInt(sealed.length);
        out.write(sealed);
        out.flush();
    }

    void send(byte type, byte[] payload) throws IOException {
        send(type, payload, payload.length);
    }

    /**
     * {@return the next message, opened}
     *
     * @throws GuestMemoryException {@code EBADMSG} for a message that does not open (altered,
     *                              replayed, out of order, sealed with another key) or is too long
     * @throws EOFException        when the other end closed the channel
     * @throws IOException         when the channel fails
     */
    Frame receive() throws IOException {
        int length = in.readInt();
        if (length < TAG_BITS / 8 + 1 || length > MAX_BODY) {
            throw bad("a message of " + length + " bytes");
        }
        byte[] sealed = new byte[length];
        in.readFully(sealed);
        byte[] plain;
        try {
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
            c.init(Cipher.DECRYPT_MODE, key, nonce(receiveDirection, received));
            plain = c.doFinal(sealed);
        } catch (javax.crypto.AEADBadTagException e) {
            throw bad("message " + received + " does not open: altered, replayed or out of order");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM failed to open", e);
        }
        received++;
        return new Frame(plain[0], ByteBuffer.wrap(plain, 1, plain.length - 1).slice());
    }

    GuestMemoryException bad(String why) {
        return new GuestMemoryException(Errno.EBADMSG, "postCopy", "from " + peer + ": " + why, -1);
    }
}
