package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import jdk.jfr.Recording;
import jdk.jfr.consumer.RecordedEvent;
import jdk.jfr.consumer.RecordingFile;
import org.junit.jupiter.api.Test;

class FlightRecorderEventsTest {
    static final long PAGE = GuestMemory.PAGE_SIZE;

    @Test
    void everyOperationIsRecordedWithItsRangeAndDuration() throws Exception {
        Path file = Files.createTempFile("guestmemfd", ".jfr");
        try (Recording recording = new Recording()) {
            for (String name : List.of("Allocate", "Punch", "Convert", "Revoke", "OwnerRefusal")) {
                recording.enable("dev.guestmemfd." + name).withoutThreshold();
            }
            recording.start();
            try (GuestMemory m = GuestMemory.create(16 * PAGE, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD)) {
                m.allocate(0, 4 * PAGE);
                HostMapping map = m.map(0, 16 * PAGE);
                map.lease(0, PAGE);
                map.lease(PAGE, PAGE);
                m.convert(0, 2 * PAGE, Attribute.PRIVATE, Content.UNSPECIFIED);
                m.punchHole(8 * PAGE, 2 * PAGE);
                m.bind(new Owner() {
                    @Override
                    public void prepareInaccessible(Binding b, long offset, long length, Content content) throws OwnerRefusal {
                        throw new OwnerRefusal(offset, "the model says no");
                    }
                }, 12 * PAGE, 4 * PAGE);
                try {
                    m.convert(12 * PAGE, 4 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
                } catch (GuestMemoryException expected) {
                    assertThat(expected.errno()).isEqualTo(Errno.EPERM);
                }
            }
            recording.stop();
            recording.dump(file);
        }
        List<RecordedEvent> events = RecordingFile.readAllEvents(file);
        Files.delete(file);
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.Allocate"))
                .singleElement().satisfies(e -> {
                    assertThat(e.getLong("offset")).isZero();
                    assertThat(e.getLong("length")).isEqualTo(4 * PAGE);
                    assertThat(e.getDuration()).isPositive();
                });
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.Punch"))
                .singleElement().satisfies(e -> assertThat(e.getLong("offset")).isEqualTo(8 * PAGE));
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.Convert"))
                .extracting(e -> e.getString("target") + " " + e.getString("result"))
                .containsExactly("PRIVATE ok", "PRIVATE EPERM");
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.Revoke"))
                .singleElement().satisfies(e -> assertThat(e.getInt("leases")).isEqualTo(2));
        assertThat(events).filteredOn(e -> e.getEventType().getName().equals("dev.guestmemfd.OwnerRefusal"))
                .singleElement().satisfies(e -> {
                    assertThat(e.getLong("offset")).isEqualTo(12 * PAGE);
                    assertThat(e.getString("reason")).isEqualTo("the model says no");
                });
    }
}
