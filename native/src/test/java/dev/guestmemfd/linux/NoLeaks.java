package dev.guestmemfd.linux;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/** Fails a test that leaves file descriptors or {@code memfd:gmem-test} mappings behind. */
final class NoLeaks implements BeforeEachCallback, AfterEachCallback {
    static final String NAME = "gmem-test";
    private static final ExtensionContext.Namespace NS = ExtensionContext.Namespace.create(NoLeaks.class);

    @Override
    public void beforeEach(ExtensionContext context) {
        context.getStore(NS).put("fds", ProcSelf.openDescriptors());
        context.getStore(NS).put("maps", ProcSelf.mappingsOf("memfd:" + NAME));
    }

    @Override
    public void afterEach(ExtensionContext context) {
        assertThat(ProcSelf.openDescriptors()).as("open file descriptors after the test")
                .isEqualTo(context.getStore(NS).get("fds", Integer.class));
        assertThat(ProcSelf.mappingsOf("memfd:" + NAME)).as("memfd mappings after the test")
                .isEqualTo(context.getStore(NS).get("maps", Long.class));
    }
}
