package dev.guestmemfd;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.nio.ByteBuffer;
import java.nio.channels.Pipe;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Segments held by native calls when the library revokes them: NIO reads blocked on empty
 * pipes (they keep the segment's arena acquired, so it cannot close) and raw downcalls into
 * libc. Each case is the hostile sequence of issue 13; each must end with no page of the file
 * reached while private, nothing forgotten that still reaches it, no crash.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class NativeHoldTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;
    static final long SECRET = 0x5ec2e7_5ec2e7L;
    static final long HOST = 0x4057_4057_4057_4057L;

    /** A thread blocked in a native read from an empty pipe into a segment, until fed. */
    static final class BlockedRead implements AutoCloseable {
        final Pipe pipe;
        final Thread thread;
        final AtomicReference<Object> outcome = new AtomicReference<>();

        BlockedRead(MemorySegment target) throws IOException {
            pipe = Pipe.open();
            ByteBuffer buffer = target.asSlice(0, 8).asByteBuffer();
            thread = Thread.ofPlatform().daemon().start(() -> {
                try {
                    outcome.set(pipe.source().read(buffer));
                } catch (Throwable t) {
                    outcome.set(t);
                }
            });
            // Or to end at once: a segment revoked before the call began is never held.
            await(() -> inNativeRead(thread) || !thread.isAlive(), "the reader to block in its native read");
        }

        /** Feeds the pipe: the read ends, writing these bytes into the segment it held. */
        Object release(long value) throws Exception {
            ByteBuffer data = ByteBuffer.allocate(8).putLong(0, value);
            while (data.hasRemaining()) {
                pipe.sink().write(data);
            }
            thread.join(10_000);
            assertThat(thread.isAlive()).as("the read ended").isFalse();
            return outcome.get();
        }

        @Override
        public void close() throws IOException {
            pipe.sink().close();
            pipe.source().close();
        }

        private static boolean inNativeRead(Thread t) {
            for (StackTraceElement e : t.getStackTrace()) {
                if (e.isNativeMethod()) {
                    return true;
                }
            }
            return false;
        }
    }

    static void await(BooleanSupplier condition, String what) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!condition.getAsBoolean()) {
            assertThat(System.nanoTime() - deadline).as("waiting for " + what).isNegative();
            Thread.onSpinWait();
            try {
                Thread.sleep(1);
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
        }
    }

    static GuestMemory sharedFile(int pages) {
        GuestMemory memory = GuestMemory.create(pages * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
        memory.pinWait(Duration.ofMillis(50));
        return memory;
    }

    /** The guest writes its secret into page 0, now private, and the test checks it stays. */
    static void guestWritesSecret(Binding binding) {
        binding.pages().set(JAVA_LONG, 0, SECRET);
    }

    static void assertSecretIntact(Binding binding) {
        assertThat(binding.pages().get(JAVA_LONG, 0)).as("the private page, as the guest sees it").isEqualTo(SECRET);
    }

    @Test
    void aConversionRevokesALeaseThatANativeCallHoldsInThePageTables() throws Exception {
        try (GuestMemory memory = sharedFile(4); HostMapping mapping = memory.map(0, 4 * PAGE)) {
            Binding binding = memory.bind(new Owner() { }, 0, 4 * PAGE);
            Lease lease = mapping.lease(0, PAGE);
            try (BlockedRead read = new BlockedRead(lease.segment())) {
                memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                assertThat(lease.isValid()).as("revoked").isFalse();
                guestWritesSecret(binding);
                assertThat(lease.segment().get(JAVA_LONG, 0)).as("the host reads through the held segment").isNotEqualTo(SECRET);
                assertThat(read.release(HOST)).isEqualTo(8);
                assertSecretIntact(binding);
            }
            await(() -> !lease.segment().scope().isAlive(), "the held segment to end once the call let it go");
            assertThatThrownBy(() -> lease.segment().get(JAVA_LONG, 0)).isInstanceOf(IllegalStateException.class);
            // Shared again: the host's mapping reaches the file again, at the same address.
            memory.convert(0, PAGE, Attribute.SHARED, Content.PRESERVE);
            assertThat(mapping.read(0, 8)).isEqualTo(ByteBuffer.allocate(8).order(java.nio.ByteOrder.nativeOrder()).putLong(0, SECRET).array());
            try (Lease again = mapping.lease(0, PAGE)) {
                assertThat(again.segment().get(JAVA_LONG, 0)).isEqualTo(SECRET);
            }
        }
    }

    @Test
    void closingAHeldLeaseForgetsNothingThatReachesThePages() throws Exception {
        try (GuestMemory memory = sharedFile(4); HostMapping mapping = memory.map(0, 4 * PAGE)) {
            Binding binding = memory.bind(new Owner() { }, 0, 4 * PAGE);
            Lease lease = mapping.lease(0, PAGE);
            try (BlockedRead read = new BlockedRead(lease.segment())) {
                lease.close();
                assertThat(lease.isValid()).isFalse();
                memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);
                guestWritesSecret(binding);
                assertThat(lease.segment().get(JAVA_LONG, 0)).isNotEqualTo(SECRET);
                read.release(HOST);
                assertSecretIntact(binding);
            }
        }
    }

    @Test
    void closingAMappingWithAHeldLeaseForgetsNothingThatReachesThePages() throws Exception {
        try (GuestMemory memory = sharedFile(4)) {
            HostMapping mapping = memory.map(0, 4 * PAGE);
            Binding binding = memory.bind(new Owner() { }, 0, 4 * PAGE);
            Lease lease = mapping.lease(PAGE, PAGE);
            try (BlockedRead read = new BlockedRead(lease.segment())) {
                mapping.close();
                memory.convert(0, 4 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
                binding.pages().set(JAVA_LONG, PAGE, SECRET);
                assertThat(lease.segment().get(JAVA_LONG, 0)).isNotEqualTo(SECRET);
                read.release(HOST);
                assertThat(binding.pages().get(JAVA_LONG, PAGE)).isEqualTo(SECRET);
            }
        }
    }

    @Test
    void closingAHeldPinNeitherThrowsNorLeaks() throws Exception {
        try (GuestMemory memory = sharedFile(4)) {
            Binding binding = memory.bind(new Owner() { }, 0, 4 * PAGE);
            Pin pin = memory.pin(0, PAGE);
            try (BlockedRead read = new BlockedRead(pin.segment())) {
                pin.close();
                memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE);  // no longer waits for it
                guestWritesSecret(binding);
                assertThat(pin.segment().get(JAVA_LONG, 0)).isNotEqualTo(SECRET);
                read.release(HOST);
                assertSecretIntact(binding);
            }
            await(() -> !pin.segment().scope().isAlive(), "the held pin's segment to end");
        }
    }

    @Test
    void aLivePinStillHoldsOffAConversion() throws Exception {
        try (GuestMemory memory = sharedFile(4); Pin pin = memory.pin(0, PAGE)) {
            memory.pinWait(Duration.ofMillis(5));
            Errors.assertErrno(() -> memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE), "EAGAIN");
            assertThat(memory.attribute(0)).isEqualTo(Attribute.SHARED);
            assertThat(pin.segment().get(JAVA_LONG, 0)).isZero();
        }
    }

    @Test
    void closingTheFileWithHeldReferencesNeitherThrowsNorCrashesAndReleasesTheFd() throws Exception {
        GuestMemory memory = sharedFile(4);
        HostMapping mapping = memory.map(0, 4 * PAGE);
        Binding binding = memory.bind(new Owner() { }, 0, 4 * PAGE);
        mapping.write(0, ByteBuffer.allocate(8).putLong(0, SECRET).array());
        Lease lease = mapping.lease(0, PAGE);
        Pin pin = memory.pin(PAGE, PAGE);
        int fd = memory.fd();
        try (BlockedRead onLease = new BlockedRead(lease.segment());
             BlockedRead onPin = new BlockedRead(pin.segment());
             BlockedRead onBinding = new BlockedRead(binding.pages().asSlice(2 * PAGE))) {
            memory.close();
            assertThat(memory.isClosed()).isTrue();
            assertThat(Files.exists(Path.of("/proc/self/fd/" + fd))).as("the fd is closed").isFalse();
            // The held segments are still alive for Java, and reach no file page: no crash, zeros.
            assertThat(lease.segment().get(JAVA_LONG, 0)).isZero();
            // Files created now never get the addresses the held segments reach.
            for (int i = 0; i < 8; i++) {
                try (GuestMemory other = sharedFile(4); HostMapping m = other.map(0, 4 * PAGE)) {
                    m.write(0, ByteBuffer.allocate(8).putLong(0, HOST).array());
                    assertThat(lease.segment().get(JAVA_LONG, 0)).isZero();
                    assertThat(pin.segment().get(JAVA_LONG, 0)).isZero();
                }
            }
            assertThat(onLease.release(HOST)).isEqualTo(8);
            assertThat(onPin.release(HOST)).isEqualTo(8);
            assertThat(onBinding.release(HOST)).isEqualTo(8);
        }
        await(() -> !lease.segment().scope().isAlive() && !pin.segment().scope().isAlive()
                && !binding.pages().scope().isAlive(), "every held segment to end");
        assertThatThrownBy(() -> lease.segment().get(JAVA_LONG, 0)).isInstanceOf(IllegalStateException.class);
        assertThatThrownBy(() -> binding.pages().get(JAVA_LONG, 0)).isInstanceOf(IllegalStateException.class);
        memory.close();  // idempotent
    }

    static final MethodHandle MEMSET = libc("memset", FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_INT, JAVA_LONG));
    static final MethodHandle MEMCPY = libc("memcpy", FunctionDescriptor.of(ADDRESS, ADDRESS, ADDRESS, JAVA_LONG));

    @SuppressWarnings("restricted") // the point of the test: native code the library does not control
    static MethodHandle libc(String name, FunctionDescriptor descriptor) {
        Linker linker = Linker.nativeLinker();
        return linker.downcallHandle(linker.defaultLookup().find(name).orElseThrow(), descriptor);
    }

    @Test
    void nativeCodeWithTheRawAddressOfARevokedLeaseReachesNoPrivatePageAndDoesNotCrash() throws Throwable {
        try (GuestMemory memory = sharedFile(4); HostMapping mapping = memory.map(0, 4 * PAGE);
             Arena scratch = Arena.ofConfined()) {
            Binding binding = memory.bind(new Owner() { }, 0, 4 * PAGE);
            long address;
            try (Lease lease = mapping.lease(0, 2 * PAGE)) {
                address = lease.segment().address();
            }
            memory.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            guestWritesSecret(binding);
            MemorySegment raw = MemorySegment.ofAddress(address);
            MemorySegment copy = scratch.allocate(2 * PAGE);
            MemorySegment ignored = (MemorySegment) MEMCPY.invokeExact(copy, raw, 2 * PAGE);
            assertThat(copy.get(JAVA_LONG, 0)).as("what native code reads at the revoked address").isNotEqualTo(SECRET);
            ignored = (MemorySegment) MEMSET.invokeExact(raw, 0x41, 2 * PAGE);
            assertSecretIntact(binding);
            assertThat(binding.pages().get(JAVA_LONG, PAGE)).isNotEqualTo(0x4141414141414141L);
            // Shared again: the file is back at the same address.
            memory.convert(0, 2 * PAGE, Attribute.SHARED, Content.PRESERVE);
            ignored = (MemorySegment) MEMCPY.invokeExact(copy, raw, 8L);
            assertThat(copy.get(JAVA_LONG, 0)).isEqualTo(SECRET);
            assertThat(ignored).isNotNull();
        }
    }

    @Test
    void aScopedAccessHoldsOffAConversionOfItsPagesOnly() throws Exception {
        try (GuestMemory memory = sharedFile(64); HostMapping mapping = memory.map(0, 64 * PAGE)) {
            memory.pinWait(Duration.ofSeconds(20));
            CountDownLatch inside = new CountDownLatch(1);
            CountDownLatch leave = new CountDownLatch(1);
            AtomicReference<Boolean> accessSawShared = new AtomicReference<>();
            Thread accessor = Thread.ofPlatform().start(() -> mapping.access(0, PAGE, segment -> {
                inside.countDown();
                awaitLatch(leave);
                segment.set(JAVA_LONG, 0, HOST);
                accessSawShared.set(memory.attribute(0) == Attribute.SHARED);
            }));
            assertThat(inside.await(20, TimeUnit.SECONDS)).isTrue();
            // Other pages convert while the access is in flight.
            memory.convert(32 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            Thread converter = Thread.ofPlatform().start(() -> memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE));
            await(() -> converter.getState() == Thread.State.WAITING || converter.getState() == Thread.State.TIMED_WAITING,
                    "the conversion to wait for the access");
            assertThat(memory.attribute(0)).isEqualTo(Attribute.SHARED);
            leave.countDown();
            accessor.join(20_000);
            converter.join(20_000);
            assertThat(accessSawShared.get()).isTrue();
            assertThat(memory.attribute(0)).isEqualTo(Attribute.PRIVATE);
            assertThatThrownBy(() -> mapping.access(0, PAGE, s -> { })).isInstanceOf(HostAccessFault.class);
        }
    }

    @Test
    void aScopedAccessThatArrivesDuringAConversionWaitsForItsEndAndThenFaults() throws Exception {
        try (GuestMemory memory = sharedFile(4); HostMapping mapping = memory.map(0, 4 * PAGE)) {
            CountDownLatch preparing = new CountDownLatch(1);
            CountDownLatch finish = new CountDownLatch(1);
            memory.bind(new Owner() {
                @Override
                public void prepareInaccessible(Binding b, long offset, long length, Content content) {
                    preparing.countDown();
                    awaitLatch(finish);  // the conversion is half-way: revoked, not yet private
                }
            }, 0, 4 * PAGE);
            Thread converter = Thread.ofPlatform().start(() -> memory.convert(0, PAGE, Attribute.PRIVATE, Content.PRESERVE));
            assertThat(preparing.await(20, TimeUnit.SECONDS)).isTrue();
            AtomicReference<Object> outcome = new AtomicReference<>();
            Thread accessor = Thread.ofPlatform().start(() -> {
                try {
                    mapping.access(0, PAGE, s -> outcome.set("ran while the page was being converted"));
                    outcome.compareAndSet(null, "ran");
                } catch (HostAccessFault fault) {
                    outcome.compareAndSet(null, fault);
                }
            });
            await(() -> accessor.getState() == Thread.State.WAITING, "the access to wait at the gate");
            // Other pages go on meanwhile, though the conversion holds the file's lock: no host access takes it.
            mapping.access(PAGE, PAGE, s -> s.set(JAVA_LONG, 0, HOST));
            mapping.write(2 * PAGE, new byte[] {1, 2, 3});
            assertThat(mapping.read(2 * PAGE, 3)).containsExactly(1, 2, 3);
            assertThat(outcome.get()).as("nothing ran yet").isNull();
            finish.countDown();
            converter.join(20_000);
            accessor.join(20_000);
            assertThat(outcome.get()).isInstanceOf(HostAccessFault.class);
        }
    }

    @Test
    void aScopedAccessThatOutlivesThePinWaitMakesTheConversionFailWithEagainChangingNothing() throws Exception {
        try (GuestMemory memory = sharedFile(4); HostMapping mapping = memory.map(0, 4 * PAGE)) {
            memory.pinWait(Duration.ofMillis(5));
            CountDownLatch inside = new CountDownLatch(1);
            CountDownLatch leave = new CountDownLatch(1);
            Thread accessor = Thread.ofPlatform().start(() -> mapping.access(PAGE, PAGE, segment -> {
                inside.countDown();
                awaitLatch(leave);
            }));
            assertThat(inside.await(20, TimeUnit.SECONDS)).isTrue();
            Errors.assertErrno(() -> memory.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED), "EAGAIN");
            assertThat(memory.attribute(0)).isEqualTo(Attribute.SHARED);
            assertThat(memory.attribute(PAGE)).isEqualTo(Attribute.SHARED);
            leave.countDown();
            accessor.join(20_000);
            mapping.write(0, new byte[] {7});
            assertThat(mapping.read(0, 1)).containsExactly(7);
        }
    }

    @Test
    void scopedAccessFaultsAndRefusals() {
        GuestMemory memory = sharedFile(4);
        HostMapping mapping = memory.map(0, 8 * PAGE);
        assertThat(mapping.<Long>compute(0, 8, MemorySegment::byteSize).longValue()).isEqualTo(8L);
        assertThatThrownBy(() -> mapping.access(3 * PAGE, 2 * PAGE, s -> { })).isInstanceOf(HostAccessFault.class);
        assertThatThrownBy(() -> mapping.access(5 * PAGE, PAGE, s -> { })).isInstanceOf(HostAccessFault.class);
        Errors.assertErrno(() -> mapping.access(-1, 1, s -> { }), "EFAULT");
        Errors.assertErrno(() -> mapping.access(0, Long.MAX_VALUE, s -> { }), "EFAULT");
        Errors.assertErrno(() -> mapping.access(0, -1, s -> { }), "EINVAL");
        assertThatThrownBy(() -> mapping.access(0, 1, null)).isInstanceOf(NullPointerException.class);
        AtomicReference<MemorySegment> escaped = new AtomicReference<>();
        mapping.access(0, PAGE, escaped::set);
        assertThatThrownBy(() -> escaped.get().get(JAVA_LONG, 0)).isInstanceOf(IllegalStateException.class);
        memory.convert(PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
        assertThatThrownBy(() -> mapping.access(0, 2 * PAGE, s -> { })).isInstanceOf(HostAccessFault.class)
                .satisfies(e -> assertThat(((HostAccessFault) e).errorOffset()).isEqualTo(PAGE));
        mapping.close();
        Errors.assertErrno(() -> mapping.access(0, PAGE, s -> { }), "EFAULT");
        HostMapping other = memory.map(0, PAGE);
        memory.close();
        Errors.assertErrno(() -> other.access(0, PAGE, s -> { }), "EBADF");
        Errors.assertErrno(() -> other.read(0, 8), "EBADF");
    }

    static void awaitLatch(CountDownLatch latch) {
        try {
            assertThat(latch.await(20, TimeUnit.SECONDS)).isTrue();
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
    }
}
