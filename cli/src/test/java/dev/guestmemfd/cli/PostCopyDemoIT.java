package dev.guestmemfd.cli;

import static dev.guestmemfd.cli.GmemIT.json;
import static dev.guestmemfd.cli.GmemIT.withoutKvm;
import static org.assertj.core.api.Assertions.assertThat;

import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** {@code gmem migrate --demo --postcopy}: memory-only post-copy, with and without KVM on the host. */
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

    @Test
    void postCopyGoesWithTheDemoOnly() throws Exception {
        GmemIT.Result r = withoutKvm(null, "migrate", "--postcopy", "--listen", "127.0.0.1:0");
        assertThat(r.status()).isNotZero();
        assertThat(r.err()).contains("--postcopy").contains("--demo");
        assertThat(r.err().strip().lines().count()).isEqualTo(1);
    }
}
