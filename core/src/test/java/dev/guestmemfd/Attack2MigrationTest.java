package dev.guestmemfd;

import static dev.guestmemfd.Attack2Fixture.SIZE;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowable;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.BitSet;
import java.util.EnumSet;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;

import javax.crypto.SecretKey;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import dev.guestmemfd.migration.CarriedState;
import dev.guestmemfd.migration.FileDescription;
import dev.guestmemfd.migration.GuestActivity;
import dev.guestmemfd.migration.MemoryMigration;
import dev.guestmemfd.migration.PostCopy;

/**
 * {@link MemoryMigration} and {@link PostCopy} with a destination that builds the wrong file,
 * an activity or carried state that throws, and either end's file closed from another thread.
 * After every failure: the sender threw and its activity runs again, the source file holds
 * what it held, the receiver's file is closed (or its lazy restore failed), nothing hangs.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class Attack2MigrationTest {
    static final Duration WAIT = Duration.ofSeconds(10);

    /** An activity that writes nothing and counts its pauses and resumes, or throws where told. */
    static final class Activity implements GuestActivity {
        final AtomicInteger pauses = new AtomicInteger();
        final AtomicInteger resumes = new AtomicInteger();
        volatile boolean throwOnPause;
        volatile boolean throwOnWritten;

        @Override
        public void pause() {
            pauses.incrementAndGet();
            if (throwOnPause) {
                throw new IllegalStateException("the workload broke while pausing");
            }
        }

        @Override
        public void resume() {
            resumes.incrementAndGet();
        }

        @Override
        public BitSet written() {
            if (throwOnWritten) {
                throw new IllegalStateException("the workload broke while reporting");
            }
            return new BitSet();
        }

        boolean running() {
            return pauses.get() == resumes.get();
        }
    }

    /** A carried state that throws on export or import where told. */
    static final class State implements CarriedState {
        volatile boolean throwOnExport;
        volatile boolean throwOnImport;
        volatile byte[] imported;

        @Override
        public String kind() {
            return "attack2-state";
        }

        @Override
        public byte[] exportState() {
            if (throwOnExport) {
                throw new IllegalStateException("export broke");
            }
            return new byte[] {1, 2, 3};
        }

        @Override
        public void importState(byte[] state) {
            if (throwOnImport) {
                throw new IllegalArgumentException("not mine");
            }
            imported = state;
        }
    }

    /** Both ends of a loopback connection. */
    record Pair(Socket a, Socket b) implements AutoCloseable {
        static Pair open() throws IOException {
            try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
                Socket a = new Socket(InetAddress.getLoopbackAddress(), s.getLocalPort());
                Socket b = s.accept();
                return new Pair(a, b);
            }
        }

        @Override
        public void close() throws IOException {
            a.close();
            b.close();
        }
    }

    interface Receive<T> {
        T run(Socket s, Function<FileDescription, MemoryMigration.Destination> build) throws IOException;
    }

    interface Send {
        Object run(Socket s, Binding source, Activity activity, List<CarriedState> carried) throws IOException;
    }

    static final SecretKey KEY = Attack2Fixture.key();

    static Send memoryMigration() {
        return (s, source, activity, carried) -> MemoryMigration.send(source, activity, carried, s.getInputStream(), s.getOutputStream(), KEY,
                MemoryMigration.Options.defaults());
    }

    static Receive<Object> memoryReceive() {
        return (s, build) -> MemoryMigration.receive(s.getInputStream(), s.getOutputStream(), KEY, new Snapshot.ReplayGuard(), build);
    }

    static Send postCopy() {
        return (s, source, activity, carried) -> PostCopy.send(source, activity, carried, s.getInputStream(), s.getOutputStream(), KEY, WAIT);
    }

    static Receive<Object> postCopyReceive() {
        return (s, build) -> {
            PostCopy.Arrival a = PostCopy.receive(s.getInputStream(), s.getOutputStream(), KEY, build, WAIT);
            try {
                a.restore().await(Duration.ofSeconds(30));
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
            return a;
        };
    }

    record Outcome(Throwable sender, Throwable receiver, Object arrival) {
    }

    /** Runs one migration of a fresh fixture source; checks what every failure must leave. */
    static Outcome migrate(Send send, Receive<Object> receive, Activity activity, List<CarriedState> sent,
            Function<FileDescription, MemoryMigration.Destination> build, java.util.function.Consumer<GuestMemory> duringSend)
            throws Exception {
        try (GuestMemory source = Attack2Fixture.source(); Pair p = Pair.open()) {
            Binding b = Attack2Fixture.bindingOf(source);
            Attack2Fixture.State before = Attack2Fixture.state(source);
            CompletableFuture<Object> sender = CompletableFuture.supplyAsync(() -> {
                try {
                    return send.run(p.a(), b, activity, sent);
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, Attack2Fixture.THREADS);
            CompletableFuture<Object> receiver = CompletableFuture.supplyAsync(() -> {
                try {
                    return receive.run(p.b(), build);
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }, Attack2Fixture.THREADS);
            if (duringSend != null) {
                duringSend.accept(source);
            }
            // whichever end fails first hangs up, as its caller would: the other end then sees the channel go
            CompletableFuture.anyOf(sender, receiver).handle((x, e) -> null).get(60, TimeUnit.SECONDS);
            if (sender.isCompletedExceptionally()) {
                p.a().close();
            }
            if (receiver.isCompletedExceptionally()) {
                p.b().close();
            }
            Throwable r = catchThrowable(() -> receiver.get(60, TimeUnit.SECONDS));
            if (r != null) {
                p.b().close();
            }
            Throwable s = catchThrowable(() -> sender.get(60, TimeUnit.SECONDS));
            if (r != null) {
                assertThat(r).as("the receiver answered in time").isNotInstanceOf(java.util.concurrent.TimeoutException.class);
            }
            if (s != null) {
                assertThat(s).as("the sender answered in time").isNotInstanceOf(java.util.concurrent.TimeoutException.class);
            }
            Throwable sc = s == null ? null : s.getCause();
            if (sc != null && !source.isClosed()) {
                assertThat(activity.running()).as("the sender failed (" + sc + "): its activity runs again").isTrue();
                assertThat(Attack2Fixture.state(source)).as("the source after a failed send").isEqualTo(before);
                Attack2Fixture.assertRestored(source);
            }
            return new Outcome(sc, r == null ? null : r.getCause(), r == null ? receiver.get() : null);
        }
    }

    static Errno errnoOf(Throwable t) {
        Throwable c = t;
        while (c != null && !(c instanceof GuestMemoryException)) {
            c = c.getCause();
        }
        assertThat(c).as("a GuestMemoryException in " + t).isNotNull();
        return ((GuestMemoryException) c).errno();
    }

    static final class Built {
        final AtomicReference<GuestMemory> file = new AtomicReference<>();
    }

    static Function<FileDescription, MemoryMigration.Destination> building(Built built, long size, List<CarriedState> carried) {
        return d -> {
            GuestMemory m = size == d.size() ? d.create() : GuestMemory.create(size, EnumSet.of(Flag.MMAP, Flag.INIT_SHARED));
            built.file.set(m);
            return new MemoryMigration.Destination(m, Attack2Fixture.OWNER, carried);
        };
    }

    @Test
    void bothMigrationsWorkWithTheFixture() throws Exception {
        for (boolean post : new boolean[] {false, true}) {
            Built built = new Built();
            State st = new State();
            Outcome o = migrate(post ? postCopy() : memoryMigration(), post ? postCopyReceive() : memoryReceive(), new Activity(),
                    List.of(new State()), building(built, SIZE, List.of(st)), null);
            assertThat(o.sender()).as("post " + post).isNull();
            assertThat(o.receiver()).as("post " + post).isNull();
            GuestMemory m = built.file.get();
            Attack2Fixture.BINDINGS_FOR_TESTS.put(m, post ? ((PostCopy.Arrival) o.arrival()).binding()
                    : ((MemoryMigration.Arrival) o.arrival()).binding());
            Attack2Fixture.assertRestored(m);
            assertThat(st.imported).containsExactly(1, 2, 3);
            m.close();
        }
    }

    @Test
    void aDestinationFileOfTheWrongSizeIsRefusedAndClosed() throws Exception {
        for (boolean post : new boolean[] {false, true}) {
            for (long size : new long[] {SIZE / 2, 2 * SIZE}) {
                Built built = new Built();
                Activity a = new Activity();
                Outcome o = migrate(post ? postCopy() : memoryMigration(), post ? postCopyReceive() : memoryReceive(), a, List.of(),
                        building(built, size, List.of()), null);
                assertThat(o.receiver()).as("post " + post + " size " + size).isNotNull();
                assertThat(errnoOf(o.receiver())).isEqualTo(Errno.EINVAL);
                assertThat(built.file.get().isClosed()).as("the file build made is closed").isTrue();
                assertThat(o.sender()).as("the sender fails").isNotNull();
            }
        }
    }

    @Test
    void aBuildThatThrowsOrDeclaresOtherCarriedKindsFailsBothEnds() throws Exception {
        for (boolean post : new boolean[] {false, true}) {
            Activity a = new Activity();
            Outcome o = migrate(post ? postCopy() : memoryMigration(), post ? postCopyReceive() : memoryReceive(), a, List.of(), d -> {
                throw new IllegalStateException("no memory for you");
            }, null);
            assertThat(o.receiver()).isNotNull();
            assertThat(o.sender()).isNotNull();
            Built built = new Built();
            Activity a2 = new Activity();
            Outcome o2 = migrate(post ? postCopy() : memoryMigration(), post ? postCopyReceive() : memoryReceive(), a2, List.of(new State()),
                    building(built, SIZE, List.of()), null);
            assertThat(o2.receiver()).as("post " + post + ": carried kinds differ").isNotNull();
            assertThat(errnoOf(o2.receiver())).isEqualTo(Errno.EINVAL);
            assertThat(built.file.get().isClosed()).isTrue();
            assertThat(o2.sender()).isNotNull();
        }
    }

    @Test
    void aStateTheDestinationRefusesFailsBothEnds() throws Exception {
        for (boolean post : new boolean[] {false, true}) {
            Built built = new Built();
            State refusing = new State();
            refusing.throwOnImport = true;
            Outcome o = migrate(post ? postCopy() : memoryMigration(), post ? postCopyReceive() : memoryReceive(), new Activity(),
                    List.of(new State()), building(built, SIZE, List.of(refusing)), null);
            assertThat(o.receiver()).as("post " + post).isNotNull();
            assertThat(errnoOf(o.receiver())).isEqualTo(Errno.EINVAL);
            assertThat(built.file.get().isClosed()).isTrue();
            assertThat(o.sender()).isNotNull();
        }
    }

    @Test
    void anActivityOrStateThatThrowsAtTheSourceFailsTheSendAndKeepsTheSource() throws Exception {
        for (boolean post : new boolean[] {false, true}) {
            for (String what : post ? new String[] {"export"} : new String[] {"written", "export"}) {
                Built built = new Built();
                Activity a = new Activity();
                State st = new State();
                a.throwOnPause = what.equals("pause");
                a.throwOnWritten = what.equals("written") && !post;
                st.throwOnExport = what.equals("export");
                Outcome o = migrate(post ? postCopy() : memoryMigration(), post ? postCopyReceive() : memoryReceive(), a, List.of(st),
                        building(built, SIZE, List.of(new State())), null);
                assertThat(o.sender()).as("post " + post + ", " + what).isNotNull();
                assertThat(a.running()).as("post " + post + ", " + what + ": the activity runs again").isTrue();
                assertThat(o.receiver()).as("post " + post + ", " + what + ": the receiver").isNotNull();
                if (built.file.get() != null) {
                    assertThat(built.file.get().isClosed()).as("post " + post + ", " + what + ": the receiver's file").isTrue();
                }
            }
        }
    }

    @Test
    void theSourceFileClosedFromAnotherThreadMidMemoryMigrationFailsBothEndsWithoutACrash() throws Exception {
        sourceClosedMidSend(false);
    }

    @Test
    void theSourceFileClosedFromAnotherThreadMidPostCopyFailsBothEndsWithoutACrash() throws Exception {
        sourceClosedMidSend(true);
    }

    void sourceClosedMidSend(boolean post) throws Exception {
        {
            for (int delayMs : new int[] {0, 5, 30}) {
                Built built = new Built();
                Activity a = new Activity();
                Outcome o = migrate(post ? postCopy() : memoryMigration(), post ? postCopyReceive() : memoryReceive(), a, List.of(),
                        building(built, SIZE, List.of()), source -> {
                            try {
                                Thread.sleep(delayMs);
                            } catch (InterruptedException e) {
                                Thread.currentThread().interrupt();
                            }
                            source.close();
                        });
                if (o.sender() != null) {
                    java.io.StringWriter sw = new java.io.StringWriter();
                    o.sender().printStackTrace(new java.io.PrintWriter(sw));
                    assertThat(o.sender()).as("post " + post + ", " + delayMs + " ms: " + sw).isInstanceOfAny(IOException.class,
                            GuestMemoryException.class, java.io.UncheckedIOException.class);
                    assertThat(o.receiver() != null || (built.file.get() != null && !built.file.get().isClosed()))
                            .as("post " + post + ", " + delayMs + " ms").isTrue();
                }
                if (built.file.get() != null && !built.file.get().isClosed()) {
                    built.file.get().close();
                }
            }
        }
    }

    @Test
    void anActivityWhosePauseThrowsIsResumedAfterTheFailedSend() throws Exception {
        org.assertj.core.api.SoftAssertions soft = new org.assertj.core.api.SoftAssertions();
        for (boolean post : new boolean[] {false, true}) {
            Activity a = new Activity();
            a.throwOnPause = true;
            Built built = new Built();
            try (GuestMemory source = Attack2Fixture.source(); Pair p = Pair.open()) {
                Binding b = Attack2Fixture.bindingOf(source);
                CompletableFuture<Object> receiver = CompletableFuture.supplyAsync(() -> {
                    try {
                        return (post ? postCopyReceive() : memoryReceive()).run(p.b(), building(built, SIZE, List.of()));
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }, Attack2Fixture.THREADS);
                Throwable s = catchThrowable(() -> (post ? postCopy() : memoryMigration()).run(p.a(), b, a, List.of()));
                p.a().close();
                catchThrowable(() -> receiver.get(60, TimeUnit.SECONDS));
                soft.assertThat(s).as("post " + post + ": the send fails").isNotNull();
                soft.assertThat(a.resumes.get()).as("post " + post + ": resumes after a pause that threw").isEqualTo(a.pauses.get());
                Attack2Fixture.assertRestored(source);
            }
        }
        soft.assertAll();
    }

    @Test
    void theDestinationFileClosedFromAnotherThreadDuringAPostCopyFailsTheRestoreAndResumesTheSource() throws Exception {
        for (int delayMs : new int[] {0, 2, 20}) {
            Built built = new Built();
            Activity a = new Activity();
            AtomicReference<Thread> closer = new AtomicReference<>();
            Function<FileDescription, MemoryMigration.Destination> build = d -> {
                MemoryMigration.Destination dest = building(built, SIZE, List.of()).apply(d);
                closer.set(Thread.ofPlatform().daemon().start(() -> {
                    try {
                        Thread.sleep(delayMs);
                    } catch (InterruptedException e) {
                        return;
                    }
                    dest.memory().close();
                }));
                return dest;
            };
            Outcome o = migrate(postCopy(), postCopyReceive(), a, List.of(), build, null);
            closer.get().join(30_000);
            assertThat(built.file.get().isClosed()).isTrue();
            if (o.receiver() == null) {
                PostCopy.Arrival arrival = (PostCopy.Arrival) o.arrival();
                LazyRestore r = arrival.restore();
                assertThat(r.isComplete() || r.failure().isPresent()).as(delayMs + " ms").isTrue();
                r.close();
            }
        }
    }

    @Test
    void theDestinationFileClosedFromAnotherThreadDuringAMemoryMigrationFailsBothEnds() throws Exception {
        for (int delayMs : new int[] {0, 2, 20}) {
            Built built = new Built();
            Activity a = new Activity();
            AtomicReference<Thread> closer = new AtomicReference<>();
            Function<FileDescription, MemoryMigration.Destination> build = d -> {
                MemoryMigration.Destination dest = building(built, SIZE, List.of()).apply(d);
                closer.set(Thread.ofPlatform().daemon().start(() -> {
                    try {
                        Thread.sleep(delayMs);
                    } catch (InterruptedException e) {
                        return;
                    }
                    dest.memory().close();
                }));
                return dest;
            };
            Outcome o = migrate(memoryMigration(), memoryReceive(), a, List.of(), build, null);
            closer.get().join(30_000);
            assertThat(built.file.get().isClosed()).isTrue();
            if (o.receiver() != null) {
                assertThat(o.sender()).as(delayMs + " ms: the receiver failed, so must the sender").isNotNull();
            }
        }
    }

    /** A receiver fed garbage, a bare snapshot stream, or nothing: refused (EBADMSG) or the channel's end, never a file left open. */
    @Test
    void receiversFedGarbageRefuseItAndCloseWhatTheyBuilt() throws Exception {
        byte[] random = new byte[4096];
        new java.util.Random(7).nextBytes(random);
        GuestMemory src = Attack2Fixture.source();
        byte[] snapshot = Attack2Fixture.stream(src, KEY);
        src.close();
        for (boolean post : new boolean[] {false, true}) {
            for (byte[] in : List.of(random, snapshot, new byte[0], new byte[] {0, 0, 0, 1})) {
                Built built = new Built();
                java.io.ByteArrayOutputStream answers = new java.io.ByteArrayOutputStream();
                CompletableFuture<Object> r = CompletableFuture.supplyAsync(() -> {
                    try {
                        java.io.InputStream from = new java.io.ByteArrayInputStream(in);
                        return post ? PostCopy.receive(from, answers, KEY, building(built, SIZE, List.of()), WAIT)
                                : MemoryMigration.receive(from, answers, KEY, new Snapshot.ReplayGuard(), building(built, SIZE, List.of()));
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }, Attack2Fixture.THREADS);
                Throwable t = catchThrowable(() -> r.get(60, TimeUnit.SECONDS));
                String what = "post " + post + ", " + in.length + " bytes";
                assertThat(t).as(what).isNotNull().isNotInstanceOf(java.util.concurrent.TimeoutException.class);
                Throwable c = t.getCause() instanceof java.io.UncheckedIOException u ? u.getCause() : t.getCause();
                assertThat(c).as(what + ": " + c).isInstanceOfAny(GuestMemoryException.class, IOException.class);
                if (c instanceof GuestMemoryException g) {
                    assertThat(g.errno()).as(what).isEqualTo(Errno.EBADMSG);
                }
                if (built.file.get() != null) {
                    assertThat(built.file.get().isClosed()).as(what + ": the file it built").isTrue();
                }
            }
        }
    }
}
