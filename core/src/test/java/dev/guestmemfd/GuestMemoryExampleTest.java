package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The example of the README and of the package's Javadoc ({@code package-info.java} shows the
 * region below with {@code @snippet}), run, and the README checked to hold it and the smallest
 * program ({@code CreateOneFile}) word for word.
 */
class GuestMemoryExampleTest {
    static final Path SELF = Path.of("src/test/java/dev/guestmemfd/GuestMemoryExampleTest.java");
    static final Path README = Path.of("../README.md");
    static final Path PROGRAM = Path.of("src/test/java/dev/guestmemfd/testing/CreateOneFile.java");

    @Test
    void theExampleDoesWhatItSays() {
        assertThat(GuestMemoryExampleTest.class.desiredAssertionStatus()).as("the example states its results with assert").isTrue();
        assertThatThrownBy(() -> {
            // @start region="example"
            try (GuestMemory memory = GuestMemory.create(16 << 20, Set.of(Flag.MMAP, Flag.INIT_SHARED));
                 HostMapping host = memory.map(0, 16 << 20)) {
                host.write(0x1000, "hello guest".getBytes());                // shared: the host may write
                Binding vm = memory.bind(new Owner() { }, 0, 16 << 20);      // the hypervisor's view
                memory.convert(0x1000, 4096, Attribute.PRIVATE, Content.PRESERVE);
                assert vm.pages().getString(0x1000).equals("hello guest");   // the owner still reads it
                host.read(0x1000, 11);                                       // throws HostAccessFault (EFAULT)
            }
            // @end
        }).isInstanceOfSatisfying(HostAccessFault.class, e -> assertThat(e.errno()).isEqualTo(Errno.EFAULT));
    }

    /** {@return the lines of a region of {@code @snippet} markup, without their common indentation} */
    static String region(Path source, String name) throws IOException {
        String text = Files.readString(source);
        // The markers are spelled in two pieces: javadoc reads this file for snippets too.
        String start = "// @" + "start region=\"" + name + "\"";
        String end = "// @" + "end";
        Matcher m = Pattern.compile("\\n( *)" + Pattern.quote(start) + "\\n(.*?)\\n *" + Pattern.quote(end) + "\\n", Pattern.DOTALL)
                .matcher(text);
        assertThat(m.find()).as("region " + name + " in " + source).isTrue();
        String indent = m.group(1);
        return m.group(2).lines().map(line -> line.startsWith(indent) ? line.substring(indent.length()) : line)
                .reduce((a, b) -> a + "\n" + b).orElseThrow();
    }

    @Test
    void theReadmeShowsTheExampleAsItRuns() throws IOException {
        assertThat(Files.readString(README)).as("README.md's Java example: keep it the same as the region in " + SELF)
                .contains("```java\n" + region(SELF, "example") + "\n```\n");
    }

    @Test
    void theReadmeShowsTheSmallestProgramAsTheTestsRunIt() throws IOException {
        assertThat(Files.readString(README)).as("README.md's smallest program: keep it the same as the region in " + PROGRAM
                + ", which NativeAccessTest runs").contains("```java\n" + region(PROGRAM, "program") + "\n```\n");
    }
}
