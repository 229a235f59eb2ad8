package dev.guestmemfd.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.guestmemfd.Errno;
import dev.guestmemfd.GuestMemoryException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import org.junit.jupiter.api.Test;

/** Every exception a command may throw reads as one line with the thing, the cause and the errno. */
class FailureTest {
    @Test
    void fileErrorsNameTheFileTheCauseAndTheErrno() {
        Failure missing = Failure.of(new NoSuchFileException("/x/y"));
        assertThat(missing.getMessage()).isEqualTo("/x/y: no such file or directory (ENOENT)");
        assertThat(missing.errno()).isEqualTo(Errno.ENOENT);
        Failure denied = Failure.io("key file k", new AccessDeniedException("k"));
        assertThat(denied.getMessage()).isEqualTo("key file k: permission denied (EACCES)");
        assertThat(denied.errno()).isEqualTo(Errno.EACCES);
        Failure directory = Failure.of(new UncheckedIOException(new FileSystemException("/tmp", null, "Is a directory")));
        assertThat(directory.getMessage()).isEqualTo("/tmp: is a directory (EISDIR)");
        assertThat(directory.errno().number()).isEqualTo(21);
        assertThat(Failure.of(new IOException("Connection refused")).errno().number()).isEqualTo(111);
    }

    @Test
    void libraryRefusalsKeepTheirErrnoAndWords() {
        Failure f = Failure.of(new GuestMemoryException(Errno.EBADMSG, "verify", "the stream ends early", -1));
        assertThat(f.errno()).isEqualTo(Errno.EBADMSG);
        assertThat(f.getMessage()).isEqualTo("verify: EBADMSG: the stream ends early");
        assertThat(f.exitStatus()).isEqualTo(1);
    }

    @Test
    void anErrorWithoutAnErrnoOrAMessageStillReadsWithoutAClassName() {
        Failure f = Failure.of(new NullPointerException());
        assertThat(f.errno()).isNull();
        assertThat(f.getMessage()).doesNotContain("Exception").isNotBlank();
        assertThat(Failure.usage("--x 1: no").exitStatus()).isEqualTo(2);
        assertThat(Failure.usage("--x 1: no").errno()).isEqualTo(Errno.EINVAL);
    }
}
