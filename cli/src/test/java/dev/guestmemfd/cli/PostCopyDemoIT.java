package dev.guestmemfd.cli;

import static dev.guestmemfd.cli.GmemIT.json;
import static dev.guestmemfd.cli.GmemIT.withoutKvm;
import static org.assertj.core.api.Assertions.assertThat;

import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** {@code gmem migrate --demo --postcopy}: the guest's post-copy where KVM is present, memory-only everywhere. */
@Timeout(300)
class PostCopyDemoIT {
    @Test
    void theDemoMovesAFileByPostCopyAndReportsItsFigures() throws Exception {
        for (String owner : new String[] {"sev-snp", "tdx"}) {
            GmemIT.Result r = withoutKvm(null, "migrate", "--demo", "--postcopy", "--json", "--memory", "16M", "--allocated",
                    "60", "--owner", owner, "--run-ms", "100");
            assertThat(r.status()).as(r.err()).isZero();
            Map<String, Object> m = json(r.out());
            assertThat(m).containsKeys("firstAccessMs", "residentMs", "eagerMs", "faults", "faultP99Us", "downtimeMs",
                    "totalMs", "bytesSent", "memoryBytes", "guestContinued", "path", "owner");
            assertThat(m).containsEntry("path", "memory-only").containsEntry("mode", "postcopy")
                    .containsEntry("guestContinued", true).containsEntry("memoryBytes", 16L << 20);
            assertThat((Double) m.get("firstAccessMs")).isPositive().isLessThanOrEqualTo((Double) m.get("residentMs"));
            assertThat((Long) m.get("pagesServed") * 4096).isEqualTo(m.get("allocatedBytes"));
        }
    }

    /** Where KVM is present the counting guest moves: it counts on at the destination, its memory the source's. */
    @Test
    void theDemoMovesARunningGuestByPostCopyWhereKvmIsPresent() throws Exception {
        GmemIT.assumeKvm("post-copy of a running guest");
        GmemIT.Result r = GmemIT.gmem(null, "migrate", "--demo", "--postcopy", "--json", "--memory", "16M", "--allocated", "50",
                "--run-ms", "200");
        assertThat(r.status()).as(r.err()).isZero();
        Map<String, Object> m = json(r.out());
        assertThat(m).containsKeys("firstAccessMs", "residentMs", "eagerMs", "faults", "faultP99Us", "downtimeMs", "totalMs",
                "bytesSent", "memoryBytes");
        assertThat(m).containsEntry("path", "post-copy").containsEntry("destinationBacking", "memfd")
                .containsEntry("lazy", true).containsEntry("pagesDiffering", 0L).containsEntry("guestContinued", true);
        assertThat((Long) m.get("firstTickAtDestination")).isEqualTo((Long) m.get("lastTickAtSource") + 1);
        assertThat((Double) m.get("firstAccessMs")).isPositive().isLessThanOrEqualTo((Double) m.get("residentMs"));
        GmemIT.Result memoryOnly = GmemIT.gmem(null, "migrate", "--demo", "--postcopy", "--memory-only", "--json", "--memory",
                "16M", "--allocated", "20", "--run-ms", "100");
        assertThat(memoryOnly.status()).as(memoryOnly.err()).isZero();
        assertThat(json(memoryOnly.out())).containsEntry("path", "memory-only");
    }

    @Test
    void postCopyGoesWithTheDemoOnly() throws Exception {
        GmemIT.Result r = withoutKvm(null, "migrate", "--postcopy", "--listen", "127.0.0.1:0");
        assertThat(r.status()).isNotZero();
        assertThat(r.err()).contains("--postcopy").contains("--demo");
        assertThat(r.err().strip().lines().count()).isEqualTo(1);
    }
}
