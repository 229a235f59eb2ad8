package dev.guestmemfd.testing;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A man in the middle for migration tests: takes one connection and relays it to a target,
 * recording what passes, altering one byte, or, instead of relaying, replaying a recorded
 * stream to the target. Runs in-process ({@link #start}) or as a program in a network
 * namespace of its own ({@link #main}).
 *
 * <p>{@code Relay --listen HOST:PORT --to HOST:PORT [--record FILE] [--flip N] [--timeout-ms T]}:
 * prints {@code relaying PORT} once listening, relays one connection, records the bytes from
 * the connecting end to {@code FILE} and those back to {@code FILE.back}, and inverts the
 * {@code N}th byte (from 0) that the connecting end sends. {@code Relay --replay FILE --to
 * HOST:PORT}: sends FILE's bytes to the target, reads what comes back until it closes, prints
 * {@code replayed SENT BYTES, RECEIVED BYTES}.
 */
public final class Relay implements AutoCloseable {
    private final ServerSocket server;
    private final InetSocketAddress target;
    private final Path record;
    private final long flipAt;
    private final Thread thread;
    private final AtomicLong forward = new AtomicLong();
    private volatile Socket in;
    private volatile Socket out;

    private Relay(ServerSocket server, InetSocketAddress target, Path record, long flipAt) {
        this.server = server;
        this.target = target;
        this.record = record;
        this.flipAt = flipAt;
        this.thread = Thread.ofPlatform().daemon().name("relay").unstarted(this::relayOne);
    }

    /**
     * {@return a relay listening on {@code listen}, relaying one connection to {@code target}}
     *
     * @param record where to record the bytes of the connecting end, or null
     * @param flipAt which byte of the connecting end to invert (from 0), or -1
     */
    public static Relay start(InetSocketAddress listen, InetSocketAddress target, Path record, long flipAt) throws IOException {
        ServerSocket server = new ServerSocket();
        server.bind(listen, 1);
        Relay relay = new Relay(server, target, record, flipAt);
        relay.thread.start();
        return relay;
    }

    /** {@return a relay on loopback, any free port} */
    public static Relay onLoopback(int targetPort, Path record, long flipAt) throws IOException {
        InetAddress lo = InetAddress.getLoopbackAddress();
        return start(new InetSocketAddress(lo, 0), new InetSocketAddress(lo, targetPort), record, flipAt);
    }

    /** {@return the address the relay listens on} */
    public InetSocketAddress address() {
        return (InetSocketAddress) server.getLocalSocketAddress();
    }

    /** {@return how many bytes the connecting end sent through so far} */
    public long forwarded() {
        return forward.get();
    }

    /** Waits at most {@code millis} for the relayed connection to end. */
    public void join(long millis) throws InterruptedException {
        thread.join(millis);
    }

    private void relayOne() {
        try (ServerSocket s = server; Socket a = s.accept(); Socket b = new Socket()) {
            in = a;
            out = b;
            b.connect(target, 10_000);
            OutputStream rec = record == null ? OutputStream.nullOutputStream() : Files.newOutputStream(record);
            OutputStream back = record == null ? OutputStream.nullOutputStream()
                    : Files.newOutputStream(record.resolveSibling(record.getFileName() + ".back"));
            try (rec; back) {
                Thread reverse = Thread.ofPlatform().daemon().name("relay-back").start(() -> pump(b, a, back, null, -1));
                pump(a, b, rec, forward, flipAt);
                reverse.join(30_000);
            }
        } catch (IOException | InterruptedException e) {
            // The test judges the two ends; the relay only stops.
        }
    }

    /** Copies {@code from} to {@code to} until either closes, then closes both directions. */
    private static void pump(Socket from, Socket to, OutputStream record, AtomicLong count, long flipAt) {
        byte[] buf = new byte[16384];
        long seen = 0;
        try {
            InputStream src = from.getInputStream();
            OutputStream dst = to.getOutputStream();
            for (int n; (n = src.read(buf)) > 0; ) {
                if (flipAt >= seen && flipAt < seen + n) {
                    int i = (int) (flipAt - seen);
                    buf[i] = (byte) ~buf[i];
                }
                seen += n;
                record.write(buf, 0, n);
                record.flush();
                if (count != null) {
                    count.set(seen);
                }
                dst.write(buf, 0, n);
                dst.flush();
            }
        } catch (IOException e) {
            // One side closed or reset: end both.
        } finally {
            closeQuietly(from);
            closeQuietly(to);
        }
    }

    private static void closeQuietly(Socket s) {
        try {
            s.close();
        } catch (IOException e) {
            // Closing is best effort here.
        }
    }

    /**
     * Sends a recorded stream to {@code target} as it was sent the first time, and reads all
     * that comes back: a replaying attacker.
     *
     * @return how many bytes came back
     */
    public static long replay(byte[] recorded, InetSocketAddress target, int timeoutMillis) throws IOException {
        try (Socket s = new Socket()) {
            s.connect(target, timeoutMillis);
            s.setSoTimeout(timeoutMillis);
            Thread writer = Thread.ofPlatform().daemon().name("replay").start(() -> {
                try {
                    s.getOutputStream().write(recorded);
                    s.getOutputStream().flush();
                } catch (IOException e) {
                    // The target may refuse and close before all was sent; that is the point.
                }
            });
            long received = 0;
            try {
                received = s.getInputStream().transferTo(OutputStream.nullOutputStream());
            } catch (IOException e) {
                // A reset after a refusal is an answer too.
            }
            try {
                writer.join(timeoutMillis);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return received;
        }
    }

    @Override
    public void close() throws IOException {
        server.close();
        Socket a = in;
        Socket b = out;
        if (a != null) {
            a.close();
        }
        if (b != null) {
            b.close();
        }
    }

    private static InetSocketAddress address(String hostPort) {
        int colon = hostPort.lastIndexOf(':');
        return new InetSocketAddress(hostPort.substring(0, colon), Integer.parseInt(hostPort.substring(colon + 1)));
    }

    /** The relay as a program; see the class comment. Exits after one connection. */
    public static void main(String[] args) throws Exception {
        InetSocketAddress listen = null;
        InetSocketAddress to = null;
        Path record = null;
        Path replay = null;
        long flip = -1;
        int timeout = 60_000;
        for (int i = 0; i < args.length; i += 2) {
            switch (args[i]) {
                case "--listen" -> listen = address(args[i + 1]);
                case "--to" -> to = address(args[i + 1]);
                case "--record" -> record = Path.of(args[i + 1]);
                case "--replay" -> replay = Path.of(args[i + 1]);
                case "--flip" -> flip = Long.parseLong(args[i + 1]);
                case "--timeout-ms" -> timeout = Integer.parseInt(args[i + 1]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (to == null) {
            throw new IllegalArgumentException("--to HOST:PORT is required");
        }
        if (replay != null) {
            byte[] bytes = Files.readAllBytes(replay);
            long back = replay(bytes, to, timeout);
            System.out.println("replayed " + bytes.length + " bytes, received " + back + " bytes");
            return;
        }
        if (listen == null) {
            throw new IllegalArgumentException("--listen HOST:PORT or --replay FILE is required");
        }
        try (Relay relay = start(listen, to, record, flip)) {
            System.out.println("relaying " + relay.address().getPort());
            System.out.flush();
            relay.join(timeout);
        }
    }
}
