package dev.guestmemfd.testing;

import dev.guestmemfd.PageRun;
import dev.guestmemfd.PageSource;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * A page source that passes every call to a real one: tests extend it to slow, count, hold
 * or kill the calls they are about and leave the rest alone.
 */
public abstract class ForwardingPageSource implements PageSource {
    protected final PageSource inner;

    protected ForwardingPageSource(PageSource inner) {
        this.inner = inner;
    }

    @Override
    public long fileSize() {
        return inner.fileSize();
    }

    @Override
    public List<PageRun> layout() {
        return inner.layout();
    }

    @Override
    public List<byte[]> ownerStates() {
        return inner.ownerStates();
    }

    @Override
    public Extent extent(long offset) {
        return inner.extent(offset);
    }

    @Override
    public void read(Extent extent, MemorySegment into) throws IOException {
        inner.read(extent, into);
    }

    @Override
    public void verify() throws IOException {
        inner.verify();
    }

    @Override
    public void close() throws IOException {
        inner.close();
    }
}
