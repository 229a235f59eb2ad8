package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import jdk.jfr.Recording;
import jdk.jfr.consumer.RecordedEvent;
import jdk.jfr.consumer.RecordingFile;
import org.junit.jupiter.api.Test;

/** Every call that changed or refused to change pages is recorded with its real outcome. */
class FlightRecorderOutcomesTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;

    static void quietly(Runnable call) {
        try {
            call.run();
        } catch (RuntimeException expected) {
            // the event is what this test reads
        }
    }

    @Test
    void refusalsAndOwnerFailuresAreRecordedWithTheirErrnoOrExceptionClass() throws Exception {
        Path file = Files.createTempFile("guestmemfd", ".jfr");
        try (Recording recording = new Recording()) {
            for (String name : List.of("Allocate", "Punch", "Convert", "Reference")) {
                recording.enable("dev.guestmemfd." + name).withoutThreshold();
            }
            recording.start();
            GuestMemory m = GuestMemory.create(16 * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
            m.allocate(0, PAGE);
            quietly(() -> m.allocate(1, PAGE));
            HostMapping host = m.map(0, 16 * PAGE);
            quietly(() -> m.map(1, PAGE));
            host.lease(0, PAGE).close();
            quietly(() -> host.lease(0, 0));
            quietly(() -> m.pin(0, 1));
            m.pin(0, PAGE).close();
            quietly(() -> m.bind(new Owner() { }, 0, 32 * PAGE));
            Binding populating = m.bind(new Owner() { }, 8 * PAGE, 8 * PAGE);
            m.convert(8 * PAGE, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
            populating.populate(8 * PAGE, java.lang.foreign.MemorySegment.ofArray(new byte[(int) PAGE]), null);
            quietly(() -> populating.populate(9 * PAGE, java.lang.foreign.MemorySegment.ofArray(new byte[1]), null));
            populating.close();
            quietly(() -> m.punchHole(PAGE, Long.MAX_VALUE & -PAGE));
            quietly(() -> m.convert(0, 1, Attribute.PRIVATE, Content.UNSPECIFIED));
            m.bind(new Owner() {
                @Override
                public void prepareInaccessible(Binding b, long offset, long length, Content content) {
                    throw new IllegalStateException("owner bug");
                }
            }, 0, PAGE);
            quietly(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED));
            m.close();
            quietly(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.UNSPECIFIED));
            recording.stop();
            recording.dump(file);
        }
        List<RecordedEvent> events = RecordingFile.readAllEvents(file);
        Files.delete(file);
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.Allocate"))
                .extracting(e -> e.getString("result")).containsExactly("ok", "EINVAL");
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.Punch"))
                .extracting(e -> e.getString("result")).containsExactly("EFBIG");
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.Convert"))
                .extracting(e -> e.getString("result"))
                .containsExactly("ok", "EINVAL", "java.lang.IllegalStateException", "EBADF");
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.Reference"))
                .extracting(e -> e.getString("kind") + " " + e.getString("result"))
                .containsExactly("map ok", "map EINVAL", "lease ok", "lease EINVAL", "pin EINVAL", "pin ok",
                        "bind EINVAL", "bind ok", "populate ok", "populate EINVAL", "bind ok");
    }
}
