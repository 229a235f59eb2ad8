package dev.guestmemfd.cli;

import dev.guestmemfd.migration.Identity;
import dev.guestmemfd.migration.TrustedPeer;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.file.Path;
import java.time.Duration;

/** The authenticated channel as `gmem migrate` is told of it: addresses, the two identity files, a timeout. */
final class ChannelOptions {
    private final Path identityFile;
    private final Path peerFile;
    private final Duration timeout;
    private Identity identity;
    private TrustedPeer peer;

    private ChannelOptions(Path identityFile, Path peerFile, Duration timeout) {
        this.identityFile = identityFile;
        this.peerFile = peerFile;
        this.timeout = timeout;
    }

    /** {@return the channel's options, or null when neither file is named} */
    static ChannelOptions of(Path identity, Path peer, int timeoutSeconds) {
        if (identity == null && peer == null) {
            return null;
        }
        if (identity == null || peer == null) {
            throw Failure.usage(identity == null ? "--peer needs --identity FILE too: each end proves who it is"
                    : "--identity needs --peer FILE too: the certificate of the only end to accept");
        }
        if (timeoutSeconds <= 0 || timeoutSeconds > 86_400) {
            throw Failure.usage("--timeout " + timeoutSeconds + ": seconds, 1 to 86400");
        }
        return new ChannelOptions(identity, peer, Duration.ofSeconds(timeoutSeconds));
    }

    /** Reads both files, refusing a private key that group or others may read. */
    void load() {
        try {
            identity = Identity.load(identityFile);
        } catch (IOException e) {
            throw Failure.io("--identity", e);
        }
        try {
            peer = TrustedPeer.load(peerFile);
        } catch (IOException e) {
            throw Failure.io("--peer", e);
        }
    }

    Identity identity() {
        return identity;
    }

    TrustedPeer peer() {
        return peer;
    }

    Duration timeout() {
        return timeout;
    }

    /**
     * {@return {@code value} as a socket address}: {@code ADDR:PORT}, {@code [IPv6]:PORT}, or
     * where {@code portAlone} a bare {@code PORT} meaning loopback.
     */
    static InetSocketAddress address(String option, String value, boolean portAlone) {
        String host;
        String port;
        int colon = value.lastIndexOf(':');
        if (colon < 0 && portAlone) {
            host = null;
            port = value;
        } else if (colon <= 0) {
            throw Failure.usage(option + " " + value + ": ADDR:PORT expected" + (portAlone ? ", or PORT" : ""));
        } else {
            host = value.substring(0, colon);
            port = value.substring(colon + 1);
            if (host.startsWith("[") && host.endsWith("]")) {
                host = host.substring(1, host.length() - 1);
            }
        }
        if (!port.matches("[0-9]{1,5}") || Integer.parseInt(port) > 65535 || (!portAlone && Integer.parseInt(port) == 0)) {
            throw Failure.usage(option + " " + value + ": the port is " + (portAlone ? "0" : "1") + " to 65535");
        }
        try {
            InetAddress address = host == null ? InetAddress.getLoopbackAddress() : InetAddress.getByName(host);
            return new InetSocketAddress(address, Integer.parseInt(port));
        } catch (UnknownHostException e) {
            throw Failure.usage(option + " " + value + ": unknown host " + host);
        }
    }
}
