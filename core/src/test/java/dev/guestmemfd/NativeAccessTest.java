package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.linux.Memfd;
import dev.guestmemfd.testing.CreateOneFile;
import java.io.File;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * What a user of the library sees with and without {@code --enable-native-access}, in child
 * JVMs that run {@link CreateOneFile} as the README says: on the module path and on the class
 * path, with the JDK's default and under {@code --illegal-native-access=deny}.
 */
class NativeAccessTest {
    record Run(int exit, String out, String err) {
    }

    static String location(Class<?> type) {
        try {
            return Path.of(type.getProtectionDomain().getCodeSource().getLocation().toURI()).toString();
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The library's two modules, then the program's class; {@code modulePath}: where the library goes. */
    static Run java(boolean modulePath, String... options) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.addAll(List.of(options));
        String library = location(Memfd.class) + File.pathSeparator + location(GuestMemory.class);
        if (modulePath) {
            command.addAll(List.of("-p", library, "--add-modules", "dev.guestmemfd", "-cp", location(CreateOneFile.class)));
        } else {
            command.addAll(List.of("-cp", library + File.pathSeparator + location(CreateOneFile.class)));
        }
        command.add(CreateOneFile.class.getName());
        Process p = new ProcessBuilder(command).start();
        p.getOutputStream().close();
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("the child JVM did not end within 60 s: " + command);
        }
        return new Run(p.exitValue(), new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8),
                new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8));
    }

    @Test
    void withTheFlagOnTheModulePathItRunsWithoutAWord() throws Exception {
        Run run = java(true, "--illegal-native-access=deny", "--enable-native-access=dev.guestmemfd.linux");
        assertThat(run.exit()).as(run.err()).isZero();
        assertThat(run.out()).isEqualTo("created 1048576 bytes on MEMFD\n");
        assertThat(run.err()).isEmpty();
    }

    @Test
    void withTheFlagOnTheClassPathItRunsWithoutAWord() throws Exception {
        Run run = java(false, "--illegal-native-access=deny", "--enable-native-access=ALL-UNNAMED");
        assertThat(run.exit()).as(run.err()).isZero();
        assertThat(run.err()).isEmpty();
    }

    @Test
    void withoutTheFlagTheJdkWarnsAndItRuns() throws Exception {
        Run run = java(true);
        assertThat(run.exit()).as(run.err()).isZero();
        assertThat(run.out()).isEqualTo("created 1048576 bytes on MEMFD\n");
        assertThat(run.err()).contains("WARNING: A restricted method in java.lang.foreign.Linker has been called")
                .contains("--enable-native-access=dev.guestmemfd.linux");
    }

    @Test
    void deniedOnTheModulePathTheErrorNamesTheFlag() throws Exception {
        Run run = java(true, "--illegal-native-access=deny");
        assertThat(run.exit()).isNotZero();
        assertThat(run.out()).isEmpty();
        assertThat(run.err()).startsWith("Exception in thread \"main\" java.lang.IllegalCallerException: guestmemfd calls Linux"
                + " through java.lang.foreign, and this JVM denies native access to module dev.guestmemfd.linux:"
                + " run java with --enable-native-access=dev.guestmemfd.linux\n")
                .doesNotContain("AssertionError").doesNotContain("ExceptionInInitializerError").doesNotContain("Caused by");
    }

    @Test
    void deniedOnTheClassPathTheErrorNamesTheFlag() throws Exception {
        Run run = java(false, "--illegal-native-access=deny");
        assertThat(run.exit()).isNotZero();
        assertThat(run.err()).startsWith("Exception in thread \"main\" java.lang.IllegalCallerException: guestmemfd calls Linux"
                + " through java.lang.foreign, and this JVM denies native access to the class path:"
                + " run java with --enable-native-access=ALL-UNNAMED\n")
                .doesNotContain("AssertionError").doesNotContain("ExceptionInInitializerError");
    }
}
