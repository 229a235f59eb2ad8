package dev.guestmemfd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assumptions.assumeThat;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

import javax.crypto.SecretKey;
import javax.crypto.spec.SecretKeySpec;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Attacks on lazy restore from a snapshot file: altered, cut and extended files, replays, bad
 * targets, closes mid-restore, and poison and punches racing the restore.
 */
@Timeout(value = 90, unit = TimeUnit.SECONDS)
class AttackTestLazyRestore {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final long HUGE = 2L << 20;
    private static final long FLAGS = Flag.MMAP.bit() | Flag.INIT_SHARED.bit();
    private static final SecretKey KEY = new SecretKeySpec(new byte[32], "AES");
    private static final int SHARED_FILL = 0xC3;

    @TempDir
    Path dir;

    /** A file whose pages 0-7 are shared, each filled with SHARED_FILL + page; 8-15 private; 16-31 holes. */
    private Path snapshot(Backing backing, long size, boolean privatePages) throws IOException {
        try (GuestMemory m = GuestMemory.create(size, FLAGS, backing);
                Binding b = m.bind(new Owner() { }, 0, size)) {
            try (HostMapping map = m.map(0, 16 * PAGE)) {
                for (int p = 0; p < 16; p++) {
                    byte[] page = new byte[(int) PAGE];
                    Arrays.fill(page, (byte) (SHARED_FILL + p));
                    map.write(p * PAGE, page);
                }
            }
            if (privatePages) {
                m.convert(8 * PAGE, 8 * PAGE, Attribute.PRIVATE, Content.PRESERVE);
            }
            Path file = dir.resolve("snap-" + System.nanoTime());
            try (OutputStream out = Files.newOutputStream(file)) {
                Snapshot.write(b, KEY, out);
            }
            return file;
        }
    }

    private static void assertRefused(ThrowingCall call, Errno errno) {
        assertThatThrownBy(call::run).isInstanceOfSatisfying(GuestMemoryException.class,
                e -> assertThat(e.errno()).isEqualTo(errno));
    }

    interface ThrowingCall {
        void run() throws Exception;
    }

    private static int indexOf(byte[] hay, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= hay.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (hay[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }

    private static void flip(Path file, int at) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        bytes[at] ^= 0x40;
        Files.write(file, bytes);
    }

    @Test
    void anUntouchedFileRestoresLazilyAndCompletely() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, true);
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size());
                LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { })) {
            try (HostMapping map = t.map(0, 8 * PAGE)) {
                assertThat(map.read(3 * PAGE, 4)).containsOnly((byte) (SHARED_FILL + 3));
            }
            assertThat(r.await(Duration.ofSeconds(30))).isTrue();
            assertThat(r.isComplete()).isTrue();
            assertThat(t.attribute(9 * PAGE)).isEqualTo(Attribute.PRIVATE);
            assertThat(tb.pages().asSlice(9 * PAGE, PAGE).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE))
                    .containsOnly((byte) (SHARED_FILL + 9));
            assertThat(t.attribute(20 * PAGE)).isEqualTo(Attribute.SHARED);
        }
    }

    @Test
    void anAlteredSharedPageFailsTheRestoreLoudlyAndHostAccessIsEbadmsg() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, false);
        byte[] bytes = Files.readAllBytes(file);
        byte[] needle = new byte[256];
        Arrays.fill(needle, (byte) (SHARED_FILL + 5));
        int at = indexOf(bytes, needle);
        assumeThat(at).as("shared page bytes stored in the clear").isNotNegative();
        flip(file, at + 100);
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size())) {
            LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { });
            try {
                assertRefused(() -> r.await(Duration.ofSeconds(30)), Errno.EBADMSG);
                assertThat(r.isComplete()).isFalse();
                assertThat(r.failure()).isPresent();
                assertThatThrownBy(() -> {
                    try (HostMapping map = t.map(0, 8 * PAGE)) {
                        map.read(0, 8);
                    }
                }).isInstanceOfSatisfying(GuestMemoryException.class,
                        e -> assertThat(e.errno()).isEqualTo(Errno.EBADMSG));
                assertRefused(() -> r.fetch(0, PAGE), Errno.EBADMSG);
            } finally {
                r.close();
            }
        }
    }

    @Test
    void anAlteredSealedPageIsRefusedWhenFetched() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, true);
        byte[] bytes = Files.readAllBytes(file);
        // the shared pages 0-7 are in the clear; the private ones follow them, sealed
        byte[] lastShared = new byte[(int) PAGE];
        Arrays.fill(lastShared, (byte) (SHARED_FILL + 7));
        int at = indexOf(bytes, lastShared);
        assumeThat(at).isNotNegative();
        int target = at + (int) PAGE + (int) (4 * PAGE);
        assumeThat(target).isLessThan(bytes.length - 64);
        flip(file, target);
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size())) {
            LazyRestore r;
            try {
                r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { });
            } catch (GuestMemoryException e) {
                // the flip hit a record header: the index refuses the file, also fine
                assertThat(e.errno()).isEqualTo(Errno.EBADMSG);
                return;
            }
            try {
                assertRefused(() -> r.await(Duration.ofSeconds(30)), Errno.EBADMSG);
                assertThat(r.isComplete()).isFalse();
                assertRefused(() -> t.convert(8 * PAGE, 8 * PAGE, Attribute.SHARED, Content.PRESERVE), Errno.EBADMSG);
            } finally {
                r.close();
            }
        }
    }

    @Test
    void cutAndExtendedFilesAreRefusedAtOpen() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, true);
        byte[] bytes = Files.readAllBytes(file);
        Path cut = dir.resolve("cut");
        Files.write(cut, Arrays.copyOf(bytes, bytes.length - 1));
        Path cutHalf = dir.resolve("cut-half");
        Files.write(cutHalf, Arrays.copyOf(bytes, bytes.length / 2));
        Path longer = dir.resolve("longer");
        Files.write(longer, Arrays.copyOf(bytes, bytes.length + 1));
        Path empty = dir.resolve("empty");
        Files.write(empty, new byte[0]);
        Path header = dir.resolve("header");
        byte[] h = bytes.clone();
        h[0] ^= 1;
        Files.write(header, h);
        for (Path bad : List.of(cut, cutHalf, longer, empty, header)) {
            assertThatThrownBy(() -> {
                try (PageSource s = PageSource.open(bad, KEY, new Snapshot.ReplayGuard());
                        GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                        Binding tb = t.bind(new Owner() { }, 0, t.size());
                        LazyRestore r = LazyRestore.start(List.of(tb), s, st -> { })) {
                    r.await(Duration.ofSeconds(30));
                }
            }).as(bad.getFileName().toString()).isInstanceOfSatisfying(GuestMemoryException.class,
                    e -> assertThat(e.errno()).isEqualTo(Errno.EBADMSG));
        }
    }

    @Test
    void aReplayedFileIsEalreadyAndNullsAreEinval() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, false);
        Snapshot.ReplayGuard guard = new Snapshot.ReplayGuard();
        try (PageSource first = PageSource.open(file, KEY, guard)) {
            assertThat(first.fileSize()).isEqualTo(32 * PAGE);
            assertRefused(() -> PageSource.open(file, KEY, guard).close(), Errno.EALREADY);
        }
        assertRefused(() -> PageSource.open(null, KEY, guard), Errno.EINVAL);
        assertRefused(() -> PageSource.open(file, null, new Snapshot.ReplayGuard()), Errno.EINVAL);
        assertRefused(() -> PageSource.open(file, KEY, null), Errno.EINVAL);
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size());
                PageSource s = PageSource.open(file, KEY, new Snapshot.ReplayGuard())) {
            assertRefused(() -> LazyRestore.start(null, s, st -> { }), Errno.EINVAL);
            assertRefused(() -> LazyRestore.start(List.of(tb), null, st -> { }), Errno.EINVAL);
            assertRefused(() -> LazyRestore.start(List.of(tb), s, null), Errno.EINVAL);
            assertThat(t.pageCounts().allocated()).isZero();
        }
    }

    @Test
    void badTargetsAreEinvalAndKeepTheirContents() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, true);
        // a target that already holds memory
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size());
                PageSource s = PageSource.open(file, KEY, new Snapshot.ReplayGuard())) {
            try (HostMapping map = t.map(0, PAGE)) {
                map.write(0, new byte[] {1, 2, 3});
            }
            assertRefused(() -> LazyRestore.start(List.of(tb), s, st -> { }), Errno.EINVAL);
            try (HostMapping map = t.map(0, PAGE)) {
                assertThat(map.read(0, 3)).containsExactly(1, 2, 3);
            }
            assertThat(t.attribute(9 * PAGE)).isEqualTo(Attribute.SHARED);
        }
        // a target of another size, and bindings that do not cover the file
        try (GuestMemory t = GuestMemory.create(64 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size());
                PageSource s = PageSource.open(file, KEY, new Snapshot.ReplayGuard())) {
            assertRefused(() -> LazyRestore.start(List.of(tb), s, st -> { }), Errno.EINVAL);
            assertThat(t.pageCounts().allocated()).isZero();
        }
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding half = t.bind(new Owner() { }, 0, 16 * PAGE);
                PageSource s = PageSource.open(file, KEY, new Snapshot.ReplayGuard())) {
            assertRefused(() -> LazyRestore.start(List.of(half), s, st -> { }), Errno.EINVAL);
            assertRefused(() -> LazyRestore.start(List.of(half, half), s, st -> { }), Errno.EINVAL);
            assertRefused(() -> LazyRestore.start(List.of(), s, st -> { }), Errno.EINVAL);
            assertThat(t.pageCounts().allocated()).isZero();
            assertThat(t.attribute(9 * PAGE)).isEqualTo(Attribute.SHARED);
        }
    }

    @Test
    void closingAnIncompleteRestoreFailsLaterAccessWithEio() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, true);
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size())) {
            LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { });
            r.close();
            r.close();
            if (r.isComplete()) {
                return; // the background pull won the race: nothing to stop
            }
            assertRefused(() -> r.fetch(0, t.size()), Errno.EIO);
            assertThatThrownBy(() -> {
                try (HostMapping map = t.map(0, 8 * PAGE)) {
                    map.read(0, (int) (8 * PAGE));
                }
            }).isInstanceOfSatisfying(GuestMemoryException.class,
                    e -> assertThat(e.errno()).isIn(Errno.EIO, Errno.EHWPOISON));
        }
    }

    @Test
    void poisonAndPunchDuringARestoreNeverHangAndEndConsistent() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, true);
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size());
                LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { })) {
            // a shared page with bytes and a private one, brought in first; and a hole
            r.fetch(2 * PAGE, PAGE);
            r.fetch(10 * PAGE, PAGE);
            assertThat(t.reportMemoryFailure(2 * PAGE)).isTrue();
            assertThat(t.reportMemoryFailure(10 * PAGE)).isTrue();
            assertRefused(() -> t.reportMemoryFailure(20 * PAGE), Errno.EINVAL);
            t.punch(4 * PAGE, PAGE);
            assertThat(r.await(Duration.ofSeconds(30))).isTrue();
            assertThat(t.isPoisoned(2 * PAGE)).isTrue();
            assertThat(t.isPoisoned(20 * PAGE)).isFalse();
            try (HostMapping map = t.map(3 * PAGE, 2 * PAGE)) {
                assertThat(map.read(0, (int) PAGE)).containsOnly((byte) (SHARED_FILL + 3));
                assertThat(map.read(PAGE, (int) PAGE)).containsOnly(0);
            }
            assertRefused(() -> t.map(2 * PAGE, PAGE), Errno.EHWPOISON);
            t.punch(2 * PAGE, PAGE);
            t.punch(10 * PAGE, PAGE);
            assertThat(t.poisonedPages()).isEmpty();
        }
    }

    @Test
    void alteredSharedPageOnHugetlbFailsLoudly() throws Exception {
        assumeThat(Backing.HUGETLB_2M.isAvailable()).isTrue();
        Path file = snapshot(Backing.HUGETLB_2M, HUGE, true);
        byte[] bytes = Files.readAllBytes(file);
        byte[] needle = new byte[256];
        Arrays.fill(needle, (byte) (SHARED_FILL + 1));
        int at = indexOf(bytes, needle);
        assumeThat(at).isNotNegative();
        flip(file, at + 7);
        try (GuestMemory t = GuestMemory.create(HUGE, FLAGS, Backing.HUGETLB_2M);
                Binding tb = t.bind(new Owner() { }, 0, t.size());
                LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { })) {
            // Lazy on hugetlb: a shared record has no tag of its own, so the altered byte is
            // found by the digest once every huge page is in, and the restore fails then.
            assertThat(r.eagerReason()).isEmpty();
            assertRefused(() -> r.await(Duration.ofSeconds(30)), Errno.EBADMSG);
            assertThat(r.isComplete()).isFalse();
            try (HostMapping map = t.map(0, PAGE)) {
                assertRefused(() -> map.read(0, 4), Errno.EBADMSG);
            }
        }
    }

    @Test
    void anUntouchedSnapshotRestoresOnHugetlbLazily() throws Exception {
        assumeThat(Backing.HUGETLB_2M.isAvailable()).isTrue();
        Path file = snapshot(Backing.HUGETLB_2M, HUGE, true);
        try (GuestMemory t = GuestMemory.create(HUGE, FLAGS, Backing.HUGETLB_2M);
                Binding tb = t.bind(new Owner() { }, 0, t.size());
                LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { })) {
            assertThat(r.eagerReason()).isEmpty();
            try (HostMapping map = t.map(0, 8 * PAGE)) {
                assertThat(map.read(3 * PAGE, 4)).containsOnly((byte) (SHARED_FILL + 3));
            }
            assertThat(r.await(Duration.ofSeconds(30))).isTrue();
            assertThat(t.attribute(9 * PAGE)).isEqualTo(Attribute.PRIVATE);
            r.fetch(9 * PAGE, PAGE);
            assertThat(tb.pages().asSlice(9 * PAGE, PAGE).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE))
                    .containsOnly((byte) (SHARED_FILL + 9));
        }
    }

    @Test
    void reportMemoryFailureOnAPageNotYetFetchedTreatsItAsTheLayoutSays() throws Exception {
        long size = 4096 * PAGE;
        Path file;
        try (GuestMemory m = GuestMemory.create(size, FLAGS, Backing.MEMFD);
                Binding b = m.bind(new Owner() { }, 0, size)) {
            m.allocate(0, size);
            try (HostMapping map = m.map(size - PAGE, PAGE)) {
                map.write(0, new byte[] {9});
            }
            file = dir.resolve("big");
            try (OutputStream out = Files.newOutputStream(file)) {
                Snapshot.write(b, KEY, out);
            }
        }
        try (GuestMemory t = GuestMemory.create(size, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size());
                LazyRestore r = LazyRestore.start(List.of(tb), PageSource.open(file, KEY, new Snapshot.ReplayGuard()), s -> { })) {
            // the file is "ready at once": its last page holds bytes, so it holds memory to fail
            assertThat(t.reportMemoryFailure(size - PAGE)).isTrue();
            assertThat(r.await(Duration.ofSeconds(30))).isTrue();
            assertThat(t.isPoisoned(size - PAGE)).isTrue();
        }
    }

    @Test
    void aWrongKeyNeverYieldsPrivateBytes() throws Exception {
        Path file = snapshot(Backing.MEMFD, 32 * PAGE, true);
        byte[] other = new byte[32];
        other[0] = 1;
        SecretKey wrong = new SecretKeySpec(other, "AES");
        try (GuestMemory t = GuestMemory.create(32 * PAGE, FLAGS, Backing.MEMFD);
                Binding tb = t.bind(new Owner() { }, 0, t.size())) {
            assertThatThrownBy(() -> {
                try (LazyRestore r = LazyRestore.start(List.of(tb),
                        PageSource.open(file, wrong, new Snapshot.ReplayGuard()), s -> { })) {
                    r.fetch(8 * PAGE, 8 * PAGE);
                    r.await(Duration.ofSeconds(30));
                }
            }).isInstanceOfSatisfying(GuestMemoryException.class,
                    e -> assertThat(e.errno()).isEqualTo(Errno.EBADMSG));
        }
    }
}
