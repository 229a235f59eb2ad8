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
            for (String name : List.of("Allocate", "Punch", "Convert")) {
                recording.enable("dev.guestmemfd." + name).withoutThreshold();
            }
            recording.start();
            GuestMemory m = GuestMemory.create(16 * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
            m.allocate(0, PAGE);
            quietly(() -> m.allocate(1, PAGE));
            quietly(() -> m.punchHole(PAGE, Long.MAX_VALUE & -PAGE));
            quietly(() -> m.convert(0, 1, Attribute.PRIVATE, Content.ZERO));
            m.bind(new Owner() {
                @Override
                public void prepareInaccessible(Binding b, long offset, long length, Content content) {
                    throw new IllegalStateException("owner bug");
                }
            }, 0, PAGE);
            quietly(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.ZERO));
            m.close();
            quietly(() -> m.convert(0, PAGE, Attribute.PRIVATE, Content.ZERO));
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
                .containsExactly("EINVAL", "java.lang.IllegalStateException", "EBADF");
    }
}
