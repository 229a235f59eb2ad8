package dev.guestmemfd.migration;

import dev.guestmemfd.Binding;
import dev.guestmemfd.ChangeLog;
import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import dev.guestmemfd.Owner;
import dev.guestmemfd.Snapshot;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Objects;
import java.util.function.Function;
import javax.crypto.SecretKey;

/**
 * Moves a guest memory file, with its owner's state, to another process or host without KVM:
 * one {@link Snapshot} stream, as a machine's migration sends, framed in a short conversation.
 *
 * <ol>
 *   <li>The sender writes the {@link FileDescription}; the receiver creates the file and
 *       answers u8 1 (ready).</li>
 *   <li>Pre-copy: every page while the {@link GuestActivity} writes on, then each round the
 *       pages changed since (the file's {@link ChangeLog} for the library's and the host's
 *       writes, {@link GuestActivity#written()} for the owner's), until a round is small or
 *       {@link Options#maxRounds()} were sent.</li>
 *   <li>Once the receiver said it is ready, the activity pauses, the last round goes, then each
 *       {@link CarriedState} in order, then the stream's sealed end.</li>
 *   <li>The receiver restores the pages (staged: host code sees none until the end checks out),
 *       binds the owner, imports the carried states and answers u64: its acknowledgement that it
 *       holds the file (its own {@code System.nanoTime()} then, which the source does not use:
 *       clocks of two hosts do not compare). The source times downtime on its own clock, from
 *       its pause to this answer's arrival.</li>
 * </ol>
 *
 * <p>On failure the source keeps its file and, if it was paused, its activity is resumed; the
 * destination closes the file it created, so it holds nothing. Entry points taking a key run
 * over any channel that holds a session key (an authenticated one between hosts); those taking
 * a {@link Socket} alone agree on one with {@link X25519Agreement}, for loopback only.
 */
public final class MemoryMigration {
    /** The receiver's byte saying its file is built: the source pauses only once the other side can take it. */
    private static final int READY = 1;

    private MemoryMigration() {
    }

    /**
     * How to migrate.
     *
     * @param maxRounds      rounds while the activity runs, the first (all pages) included; at least 1
     * @param convergedBytes pause once a round would send at most this many bytes
     * @param listener       told of each round sent while the activity runs
     */
    public record Options(int maxRounds, long convergedBytes, RoundListener listener) {
        /** Checks the values. */
        public Options {
            if (maxRounds < 1 || convergedBytes < 0) {
                throw new IllegalArgumentException("maxRounds must be at least 1 and convergedBytes not negative");
            }
            Objects.requireNonNull(listener, "listener");
        }

        /** {@return at most 8 rounds, pausing at 1 MiB or less} */
        public static Options defaults() {
            return new Options(8, 1L << 20, (round, bytes) -> { });
        }

        /** {@return these options telling {@code l} of each round sent while the activity runs} */
        public Options withRoundListener(RoundListener l) {
            return new Options(maxRounds, convergedBytes, l);
        }
    }

    /** Hears each pre-copy round sent while the activity still runs. */
    @FunctionalInterface
    public interface RoundListener {
        /**
         * @param round the round, 0 for the first (every page)
         * @param bytes the page bytes it sent
         */
        void roundSent(int round, long bytes);
    }

    /**
     * What a migration did and cost.
     *
     * @param roundBytes         page bytes sent per round; the last was sent with the activity paused
     * @param pausedToRestoredNs from the pause to the arrival of the destination's acknowledgement
     *                           that it holds the file, on the source's clock (downtime)
     * @param totalNs            from the start of the migration to that acknowledgement, on the source's clock
     * @param bytesSent          bytes written to the other side, a key agreement included
     * @param memoryBytes        the file's size
     */
    public record Report(List<Long> roundBytes, long pausedToRestoredNs, long totalNs, long bytesSent,
                         long memoryBytes) {
        /** Copies the list. */
        public Report {
            roundBytes = List.copyOf(roundBytes);
        }

        /** {@return the page bytes of all rounds} */
        public long pageBytes() {
            return roundBytes.stream().mapToLong(Long::longValue).sum();
        }
    }

    /**
     * What the receiver makes ready for a file: the empty file, the owner to bind over all of it
     * once its pages have landed, and the objects that take the carried states, one per kind
     * the description names, in its order.
     *
     * @param memory  an empty file as described (see {@link FileDescription#create()})
     * @param owner   the file's owner at the destination
     * @param carried where the carried states go
     */
    public record Destination(GuestMemory memory, Owner owner, List<CarriedState> carried) {
        /** Copies the list. */
        public Destination {
            Objects.requireNonNull(memory, "memory");
            Objects.requireNonNull(owner, "owner");
            carried = List.copyOf(carried);
        }
    }

    /**
     * What arrived: the file with its owner's binding over all of it, and the carried states
     * taken on.
     *
     * @param binding the owner's binding over the whole new file
     * @param carried the objects that took the carried states
     */
    public record Arrival(Binding binding, List<CarriedState> carried) {
        /** Copies the list. */
        public Arrival {
            Objects.requireNonNull(binding, "binding");
            carried = List.copyOf(carried);
        }

        /** {@return the file} */
        public GuestMemory memory() {
            return binding.memory();
        }
    }

    // ------------------------------------------------------------------ the sender's side

    /**
     * Migrates a file over a loopback socket, agreeing on the key with {@link X25519Agreement}.
     *
     * @see #send(Binding, GuestActivity, List, InputStream, OutputStream, SecretKey, Options)
     */
    public static Report send(Binding source, GuestActivity activity, List<? extends CarriedState> carried,
                              Socket socket, Options options) throws IOException {
        long start = System.nanoTime();
        CountingOutputStream counting = new CountingOutputStream(socket.getOutputStream());
        InputStream from = socket.getInputStream();
        SecretKey key = X25519Agreement.agree(from, counting);
        return send(source, activity, carried, from, counting, key, options, start);
    }

    /**
     * Migrates the file {@code source} covers over a channel that holds a session key. When it
     * returns, the file lives on at the other side and the activity stays paused: the caller
     * closes the source. When it throws, the source file is as the activity left it and the
     * activity runs again.
     *
     * @param source   the owner's binding over the whole file: it alone reads private pages
     * @param activity what writes the file meanwhile; paused for the last round
     * @param carried  states sent after the last round, in order (the owner's, a workload's)
     * @param from     the receiver's answers
     * @param to       where the stream goes
     * @param key      the session key both ends hold
     * @throws GuestMemoryException {@code EINVAL} for a null argument or a binding that does not
     *                              cover its file; {@code EBADF} for a closed file
     * @throws IOException          when the channel fails or the receiver hangs up (it refused
     *                              the stream)
     */
    public static Report send(Binding source, GuestActivity activity, List<? extends CarriedState> carried,
                              InputStream from, OutputStream to, SecretKey key, Options options) throws IOException {
        long start = System.nanoTime();
        return send(source, activity, carried, from, to == null ? null : new CountingOutputStream(to), key, options,
                start);
    }

    private static Report send(Binding source, GuestActivity activity, List<? extends CarriedState> carried,
                               InputStream from, CountingOutputStream counting, SecretKey key, Options options,
                               long start) throws IOException {
        if (source == null || activity == null || carried == null || carried.stream().anyMatch(Objects::isNull) || from == null
                || counting == null || key == null || options == null) {
            throw new GuestMemoryException(Errno.EINVAL, "migrate", "an argument is null", -1);
        }
        GuestMemory memory = source.memory();
        DataOutputStream out = new DataOutputStream(new BufferedOutputStream(counting, 1 << 16));
        DataInputStream in = new DataInputStream(from);
        Snapshot.Writer writer = Snapshot.writer(List.of(source), key, out);
        List<Long> rounds = new ArrayList<>();
        boolean paused = false;
        try (ChangeLog changes = memory.trackChanges()) {
            writer.writeState(FileDescription.of(memory, carried).encode());
            writer.flush();  // the receiver creates its file while the pages travel
            changed(changes, activity);  // clear both logs: the first round sends everything
            rounds.add(writer.writeAll());
            writer.flush();
            options.listener().roundSent(0, rounds.getLast());
            BitSet pending = changed(changes, activity);
            while (rounds.size() < options.maxRounds()
                    && pending.cardinality() * GuestMemory.PAGE_SIZE > options.convergedBytes()) {
                rounds.add(writer.writePages(pending));
                writer.flush();
                options.listener().roundSent(rounds.size() - 1, rounds.getLast());
                pending = changed(changes, activity);
            }
            awaitReady(in);
            long pausedAt = System.nanoTime();
            paused = true;  // before the call: a pause that throws half-way is resumed too
            activity.pause();
            pending.or(changed(changes, activity));
            rounds.add(writer.writePages(pending));
            for (CarriedState state : carried) {
                writer.writeState(state.exportState());
            }
            writer.finish();
            in.readLong();  // the destination holds the file; its clock's value means nothing here
            long restoredAt = System.nanoTime();
            return new Report(rounds, restoredAt - pausedAt, restoredAt - start, counting.count(), memory.size());
        } catch (IOException | RuntimeException e) {
            if (paused) {
                activity.resume();
            }
            throw e;
        }
    }

    private static void awaitReady(DataInputStream in) throws IOException {
        int answer = in.readUnsignedByte();
        if (answer != READY) {
            throw new IOException("the receiver answered " + answer + " instead of saying it is ready");
        }
    }

    /** {@return the pages written since the last call: through the library, or by the owner} */
    private static BitSet changed(ChangeLog changes, GuestActivity activity) {
        BitSet pages = changes.drain();
        pages.or(activity.written());
        return pages;
    }

    // ------------------------------------------------------------------ the receiver's side

    /**
     * Receives a file over a loopback socket, agreeing on the key with {@link X25519Agreement}.
     *
     * @see #receive(InputStream, OutputStream, SecretKey, Snapshot.ReplayGuard, Function)
     */
    public static Arrival receive(Socket socket, Snapshot.ReplayGuard replays,
                                  Function<FileDescription, Destination> build) throws IOException {
        InputStream in = new BufferedInputStream(socket.getInputStream(), 1 << 16);
        SecretKey key = X25519Agreement.agree(in, socket.getOutputStream());
        return receive(in, socket.getOutputStream(), key, replays, build);
    }

    /**
     * Receives a file: reads its description, has {@code build} create the file, restores every
     * page, checks the stream's end, binds the owner over the whole file, imports the carried
     * states and tells the sender. On any failure the file {@code build} made is closed before this
     * throws: the destination holds nothing.
     *
     * @param from    the stream, and nothing of it is read past its sealed end
     * @param to      where the answers go
     * @param key     the session key both ends hold
     * @param replays the streams this destination took already
     * @param build   creates an empty file as described (see {@link FileDescription#create()}),
     *                names its owner and where each carried state goes
     * @throws GuestMemoryException {@code EBADMSG} for a stream that is cut, altered or sealed
     *                              with another key, or a description that does not read;
     *                              {@code EALREADY} for a replayed stream; {@code EINVAL} for a
     *                              null argument, a file of another size, carried kinds
     *                              that differ from the description's, or a state its object
     *                              refuses
     * @throws IOException          when the channel fails
     */
    public static Arrival receive(InputStream from, OutputStream to, SecretKey key, Snapshot.ReplayGuard replays,
                                  Function<FileDescription, Destination> build) throws IOException {
        if (from == null || to == null || key == null || replays == null || build == null) {
            throw new GuestMemoryException(Errno.EINVAL, "receive", "an argument is null", -1);
        }
        DataOutputStream out = new DataOutputStream(to);
        // The stream is one message of the conversation: the answer follows it.
        Snapshot.Reader reader = Snapshot.reader(key, from, replays, Snapshot.Framing.EMBEDDED);
        FileDescription description = FileDescription.decode(reader.readState());
        if (description.size() != reader.fileSize()) {
            throw new GuestMemoryException(Errno.EBADMSG, "receive", "the description says " + description.size()
                    + " bytes, the stream " + reader.fileSize(), -1);
        }
        Destination destination = build.apply(description);
        GuestMemory memory = destination.memory();
        try {
            check(destination, description);
            out.writeByte(READY);
            out.flush();
            List<byte[]> states = new ArrayList<>();
            // The pages land under a binding of the migration's own; the owner is bound once they
            // are in place and takes its view of them from its carried state. The restore's staging
            // reveals shared pages by converting them in place, which an owner that models memory
            // encryption refuses, rightly: no guest asked for it.
            try (Binding landing = memory.bind(new Owner() { }, 0, memory.size())) {
                reader.restore(List.of(landing), states::add);
            }
            if (states.size() != destination.carried().size()) {
                throw new GuestMemoryException(Errno.EBADMSG, "receive", "the stream carries " + states.size()
                        + " states after its pages, the description names " + destination.carried().size(), -1);
            }
            Binding binding = memory.bind(destination.owner(), 0, memory.size());
            for (int i = 0; i < states.size(); i++) {
                try {
                    destination.carried().get(i).importState(states.get(i));
                } catch (IllegalArgumentException refused) {
                    throw new GuestMemoryException(Errno.EINVAL, "receive", destination.carried().get(i).kind()
                            + " refused its state: " + refused.getMessage(), -1);
                }
            }
            out.writeLong(System.nanoTime());
            out.flush();
            return new Arrival(binding, destination.carried());
        } catch (IOException | RuntimeException e) {
            memory.close();
            throw e;
        }
    }

    private static void check(Destination destination, FileDescription description) {
        if (destination.memory().size() != description.size()) {
            throw new GuestMemoryException(Errno.EINVAL, "receive", "the destination's file has "
                    + destination.memory().size() + " bytes, the description " + description.size(), -1);
        }
        List<String> kinds = destination.carried().stream().map(CarriedState::kind).toList();
        if (!kinds.equals(description.carried())) {
            throw new GuestMemoryException(Errno.EINVAL, "receive", "the stream carries " + description.carried()
                    + ", the destination takes " + kinds, -1);
        }
    }
}
