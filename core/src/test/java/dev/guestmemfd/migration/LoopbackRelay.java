package dev.guestmemfd.migration;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * The relay between the two ends of an in-process migration test: passes one connection on
 * to the destination, the source's bytes through a pump that may tamper with them, the
 * destination's back through another. When either pump ends, both sockets close, so that each
 * end sees the other go.
 */
final class LoopbackRelay {
    private LoopbackRelay() {
    }

    /** Copies one direction of the connection until its input ends or it decides to stop. */
    @FunctionalInterface
    interface Pump {
        void copy(InputStream in, OutputStream out) throws IOException;
    }

    /**
     * Accepts one connection on {@code relay} and relays it to {@code destination} until both
     * directions end.
     *
     * @param socketTimeoutMs the read timeout of both relayed sockets
     */
    static void relayOne(ServerSocket relay, ServerSocket destination, int socketTimeoutMs, ExecutorService threads,
                         Pump forward, Pump back) {
        try (Socket from = relay.accept();
             Socket to = new Socket(destination.getInetAddress(), destination.getLocalPort())) {
            from.setSoTimeout(socketTimeoutMs);
            to.setSoTimeout(socketTimeoutMs);
            CompletableFuture<Void> reverse = CompletableFuture.runAsync(() -> pump(back, to, from), threads);
            pump(forward, from, to);
            reverse.get(60, TimeUnit.SECONDS);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private static void pump(Pump pump, Socket a, Socket b) {
        try {
            pump.copy(a.getInputStream(), b.getOutputStream());
        } catch (IOException e) {
            // an end closed: the other pump ends with it
        } finally {
            closeQuietly(a);
            closeQuietly(b);
        }
    }

    private static void closeQuietly(Socket s) {
        try {
            s.close();
        } catch (IOException e) {
            // already closed
        }
    }
}
