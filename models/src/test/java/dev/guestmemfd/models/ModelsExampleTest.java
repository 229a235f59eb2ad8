package dev.guestmemfd.models;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.Attribute;
import dev.guestmemfd.Content;
import dev.guestmemfd.Errno;
import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.GuestMemoryException;
import java.util.Set;
import org.junit.jupiter.api.Test;

/**
 * The example of the package's Javadoc ({@code package-info.java} shows the region below with
 * {@code @snippet}), run.
 */
class ModelsExampleTest {
    @Test
    void theExampleDoesWhatItSays() {
        assertThat(ModelsExampleTest.class.desiredAssertionStatus()).as("the example states its results with assert").isTrue();
        // @start region="example"
        SevSnpModel snp = new SevSnpModel();
        try (GuestMemory memory = GuestMemory.create(1 << 20, Set.of(Flag.MMAP, Flag.INIT_SHARED))) {
            memory.bind(snp, 0, memory.size());                        // the model owns the whole file
            memory.convert(0, 4096, Attribute.PRIVATE, Content.UNSPECIFIED);  // RMPUPDATE, then the guest's PVALIDATE
            assert snp.stateOf(0).equals("assigned+validated");
            snp.launchFinish();                                        // the guest runs
            try {
                memory.convert(4096, 4096, Attribute.PRIVATE, Content.PRESERVE);
            } catch (GuestMemoryException refused) {                   // PRESERVE into the guest: before launch only
                assert refused.errno() == Errno.EOPNOTSUPP;
                assert refused.errorOffset() == 4096;
                assert memory.attribute(4096) == Attribute.SHARED;     // and nothing changed
            }
        }
        // @end
        assertThat(snp.log()).containsExactly("RMPUPDATE(assigned) 0x0", "PVALIDATE 0x0", "SNP_LAUNCH_FINISH 0x0");
        assertThat(snp.violations()).isEmpty();
    }
}
