package dev.guestmemfd;

import dev.guestmemfd.internal.BackingFile;
import dev.guestmemfd.internal.Events;
import dev.guestmemfd.internal.HostView;
import dev.guestmemfd.internal.PageBits;
import dev.guestmemfd.internal.PoisonMarks;
import dev.guestmemfd.internal.RangeGate;
import dev.guestmemfd.internal.RunMap;
import dev.guestmemfd.linux.Fd;
import dev.guestmemfd.linux.KvmDevice;
import dev.guestmemfd.linux.LinuxException;
import dev.guestmemfd.linux.Mman;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.concurrent.locks.StampedLock;
import java.util.function.Function;
import java.util.function.Supplier;

/**
 * A guest memory file: a fixed-size, memory-only file whose pages are allocated on demand,
 * zeroed before first use, freed by punching holes, and kept shared or private.
 *
 * <p>Host code reaches shared pages through a {@link HostMapping} (revocable leases) or a
 * {@link Pin} (short, not revocable); owners ({@link Owner}, through a {@link Binding})
 * reach every page. Converting pages to private revokes every lease over them before it
 * returns, waits a bounded time for pins, and asks the owners; it happens whole or not at all.
 *
 * <p>Errors carry the errno that the kernel's guest_memfd gives for the same input
 * ({@link GuestMemoryException#errno()}); a refused call changes nothing. Offsets and lengths
 * are checked before anything changes, without overflow: a range whose end does not fit in a
 * {@code long} is refused like any other. A null argument throws {@link NullPointerException}
 * naming it, before anything changes.
 *
 * <p>Closing the file ends every operation on it first: an operation waiting (for a pin, for a
 * conversion) when the file closes fails with {@code EBADF}, and the file descriptor is closed
 * only once no operation can still use it, so no operation ever acts on a descriptor number
 * that the process may have reused. An owner callback that calls an operation which would have
 * to wait for the operation that called the owner (a conversion of the range being converted,
 * {@code close()}) gets {@code EDEADLK} at once rather than waiting on itself for ever.
 *
 * @implSpec Thread safe. Every change of state, and every grant of a lease or pin, happens
 * under one lock per file, so that they are linearizable; access through a granted segment
 * takes no lock. The conversion protocol is described in {@code docs/STATE-MODEL.md}.
 */
public final class GuestMemory implements AutoCloseable {
    /** The page size: every offset and length given to the file must be a multiple of it. */
    public static final long PAGE_SIZE = Mman.PAGE_SIZE;
    /** How long a conversion to private waits for pins unless told otherwise. */
    public static final Duration DEFAULT_PIN_WAIT = Duration.ofMillis(10);
    /**
     * The longest pin wait {@link #pinWait(Duration)} accepts: a pin is a short reference for
     * I/O, and a longer wait holds every conversion of the file back with it.
     */
    public static final Duration MAX_PIN_WAIT = Duration.ofHours(1);

    private final BackingFile file;
    private final Backing backing;
    private final long size;
    private final long pages;
    private final Set<Flag> flags;
    /** Set where a page is private. */
    private final PageBits attributes;
    /**
     * Set where the library allocated a page with fallocate. The kernel counts such a page as
     * resident only once it is written, so residency alone would miss it.
     */
    private final PageBits fallocated;

    private final ReentrantLock lock = new ReentrantLock();
    /** Signalled whenever a pin is dropped or a conversion ends. */
    private final Condition changed = lock.newCondition();
    private final List<Lease> leases = new ArrayList<>();
    private final List<Pin> pins = new ArrayList<>();
    private final List<Binding> bindings = new ArrayList<>();
    /** Open change logs: usually none, one while a migration runs. */
    private final List<ChangeLog> changeLogs = new ArrayList<>();
    /** The host's own mapping of the file: every segment handed to host code is a view of it. */
    private final HostView hostView;
    /** Keeps scoped host accesses and the conversion of their pages apart, without the lock. */
    private final RangeGate gate = new RangeGate(lock);
    /**
     * Guards {@link #attributes} and {@link #unrestored} for host accesses, which read them
     * without the file's lock: a conversion takes it for writing around the few microseconds
     * in which it flips bits; an access reads optimistically and validates, and reads again
     * under the read lock only if a conversion (of other pages: the gate keeps its own out)
     * wrote meanwhile. No copy of the bits, so metadata stays at most a bit or two per page.
     */
    private final StampedLock bitsLock = new StampedLock();
    /**
     * Shared pages whose file mapping the kernel refused to put back into the host's view
     * (mmap failed): host access faults on them rather than reach the dummy page. Empty, and
     * so free, unless that ever happens.
     */
    private final PageBits unrestored;
    /** Whether {@link #unrestored} ever held a page: until then accesses skip it. */
    private volatile boolean anyUnrestored;
    /**
     * Pages reported poisoned ({@link #reportMemoryFailure}) and not punched since: no access
     * reaches them. Written under the lock and {@link #bitsLock}, like {@link #attributes}.
     */
    private final PoisonMarks poisoned;
    /** Sets and reads the NUMA policy of the file's ranges. */
    private final PolicyControl placement;
    /** The range of the conversion in progress, whose pages grant no new host reference. */
    private long busyStart = -1;
    private long busyEnd = -1;
    /** The thread running the conversion of the busy range: a wait of its own on that range would never end. */
    private Thread busyThread;
    /**
     * Operations that use the file's mapping without holding the lock (the residency scan of
     * {@link #pageRuns()}); {@link #close()} waits for them to leave before closing the fd.
     */
    private int users;
    /** Test hook: runs while {@link #pageRuns()} is between its locked snapshot and its residency scan. */
    volatile Runnable beforeResidencyScan;
    private long conversions;
    /** Written under the lock; read without it for the early EBADF, as a closed fd fails first. */
    private volatile boolean closed;
    private Duration pinWait = DEFAULT_PIN_WAIT;
    /**
     * The lazy restore still bringing pages into this file, or null: every library access
     * asks it to fetch its range first, so no Java code touches a page that is not there yet.
     */
    volatile LazyRestore lazyRestore;

    /** Package-private for the test that runs the kernel-conversion path on a kernel that lacks it. */
    GuestMemory(BackingFile file, Backing backing, Set<Flag> flags) {
        this.file = file;
        this.backing = backing;
        this.size = file.size();
        this.pages = size / PAGE_SIZE;
        this.flags = Set.copyOf(flags);
        this.attributes = new PageBits(!flags.contains(Flag.INIT_SHARED), pages);
        this.fallocated = new PageBits(false, pages);
        this.unrestored = new PageBits(false, pages);
        this.poisoned = new PoisonMarks(pages, bitsLock);
        this.placement = new PolicyControl(file, backing);
        startPrivateInKernel(file, this.flags);
        this.hostView = hostViewOf(file);
    }

    /**
     * Where the kernel converts in place, makes its pages private as ours start unless
     * INIT_SHARED: the library always creates the kernel's file INIT_SHARED. The file is
     * closed when the kernel refuses.
     */
    private static void startPrivateInKernel(BackingFile file, Set<Flag> flags) {
        if (file.kernelConverts() && !flags.contains(Flag.INIT_SHARED)) {
            try {
                file.setAttributes(0, file.size(), true, dev.guestmemfd.linux.KvmUapi.KVM_SET_MEMORY_ATTRIBUTES2_MODE_UNSPECIFIED);
            } catch (BackingFile.AttributesRefused e) {
                file.close();
                throw new GuestMemoryException(Errno.of(e.errno()), "create(size=" + file.size() + ")",
                        "the kernel refused to make the new file's pages private", e.errorOffset());
            }
        }
    }

    /** {@return the host's mapping of {@code file}; the file is closed when it cannot be mapped} */
    private static HostView hostViewOf(BackingFile file) {
        try {
            return new HostView(file);
        } catch (LinuxException e) {
            file.close();
            throw e;
        }
    }

    /**
     * Creates a guest memory file on the backing that its flags call for: {@code memfd_secret}
     * with {@link Flag#NO_DIRECT_MAP}, a memfd otherwise.
     *
     * @see #create(long, long, Backing)
     */
    public static GuestMemory create(long size, Set<Flag> flags) {
        java.util.Objects.requireNonNull(flags, "flags");
        return create(size, Flag.bits(flags), flags.contains(Flag.NO_DIRECT_MAP) ? Backing.SECRET : Backing.MEMFD);
    }

    /**
     * Creates a guest memory file.
     *
     * @param size    bytes, a positive multiple of the backing's {@link Backing#blockSize()}
     *                (the huge page size on the hugetlb backings); never changes
     * @param flags   the bits of {@link Flag}
     * @param backing where the pages come from
     * @return the new file, every page absent, shared or private as the flags say
     * @throws GuestMemoryException {@code EINVAL} for a size that is not a positive multiple of
     *                              the backing's block size, unknown flag bits, or
     *                              {@link Flag#NO_DIRECT_MAP} on a backing that keeps the direct
     *                              map; {@code ENODEV} when the host lacks the backing;
     *                              {@code ENOMEM} when a hugetlb pool cannot hold the file, and
     *                              the like from the kernel
     */
    public static GuestMemory create(long size, long flags, Backing backing) {
        java.util.Objects.requireNonNull(backing, "backing");
        String op = "create(size=" + size + ", flags=0x" + Long.toHexString(flags) + ", backing=" + backing + ")";
        if (size <= 0 || size % PAGE_SIZE != 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "size must be a positive multiple of " + PAGE_SIZE, -1);
        }
        if ((flags & ~Flag.KNOWN_BITS) != 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "unknown flag bits 0x" + Long.toHexString(flags & ~Flag.KNOWN_BITS), -1);
        }
        if (size % backing.blockSize() != 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "size must be a multiple of the " + backing
                    + " backing's huge page, " + backing.blockSize() + " bytes: the kernel maps and reserves whole huge pages", -1);
        }
        if ((flags & Flag.NO_DIRECT_MAP.bit()) != 0 && backing != Backing.SECRET) {
            throw new GuestMemoryException(Errno.EINVAL, op, "NO_DIRECT_MAP needs the SECRET backing; " + backing
                    + " pages stay in the kernel's direct map", -1);
        }
        try {
            BackingFile file = switch (backing) {
                case MEMFD -> new BackingFile.Memfd(size);
                case SECRET -> secretFile(size);
                case KERNEL -> kernelFile(size);
                case HUGETLB_2M, HUGETLB_1G -> HugetlbFiles.create(size, backing);
            };
            return new GuestMemory(file, backing, Flag.of(flags));
        } catch (LinuxException e) {
            throw fromKernel(op, e);
        }
    }

    /**
     * Creates a guest memory file on the kernel's guest_memfd of a VM that the caller runs:
     * KVM binds a guest_memfd only into the VM it was created on.
     *
     * @param vmFd a KVM VM file descriptor; the caller keeps it open at least as long as the file
     * @see #create(long, long, Backing)
     */
    public static GuestMemory createOnVm(long size, long flags, int vmFd) {
        String op = "createOnVm(size=" + size + ", flags=0x" + Long.toHexString(flags) + ", vm=" + vmFd + ")";
        if (size <= 0 || size % PAGE_SIZE != 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "size must be a positive multiple of " + PAGE_SIZE, -1);
        }
        if ((flags & ~(Flag.MMAP.bit() | Flag.INIT_SHARED.bit())) != 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "the kernel's guest_memfd takes only MMAP and INIT_SHARED here", -1);
        }
        try {
            return new GuestMemory(BackingFile.KernelGuestMemfd.create(size, vmFd), Backing.KERNEL, Flag.of(flags));
        } catch (LinuxException e) {
            throw fromKernel(op, e);
        }
    }

    /** A memfd_secret; ENODEV where the kernel has none (it answers ENOSYS). */
    private static BackingFile secretFile(long size) {
        try {
            return new BackingFile.Secret(size);
        } catch (LinuxException e) {
            if (e.is(dev.guestmemfd.linux.Errno.ENOSYS)) {
                throw new LinuxException(dev.guestmemfd.linux.Errno.ENODEV.number(),
                        "the SECRET backing needs memfd_secret, which this kernel lacks (" + e.getMessage() + ")");
            }
            throw e;
        }
    }

    /** A file of the kernel's guest_memfd on a VM of its own; ENODEV, with the reason, where the host has none. */
    private static BackingFile kernelFile(long size) {
        var missing = KvmDevice.unavailableReason();
        if (missing.isPresent()) {
            throw new LinuxException(dev.guestmemfd.linux.Errno.ENODEV.number(), "the KERNEL backing needs /dev/kvm: " + missing.get());
        }
        return BackingFile.KernelGuestMemfd.create(size, -1);
    }

    static GuestMemoryException fromKernel(String op, LinuxException e) {
        // The kernel's exception type is not exported: its errno and call travel, not the object.
        return new GuestMemoryException(Errno.of(e.errno()), op, "the kernel refused: " + e.call(), -1);
    }

    /** {@return the size in bytes} */
    public long size() {
        return size;
    }

    /**
     * {@return the file's block size: the unit in which memory is taken and returned, the huge
     * page size on the hugetlb backings} Offsets and lengths stay {@link #PAGE_SIZE} granular.
     */
    public long blockSize() {
        return file.blockSize();
    }

    /** {@return the creation flags} */
    public Set<Flag> flags() {
        return flags;
    }

    /** {@return the backing} */
    public Backing backing() {
        return backing;
    }

    /**
     * {@return true when punching any page-aligned hole returns the pages' memory to the
     * system} False where a punch may zero pages in place and keep their memory: on
     * {@link Backing#SECRET} always, on the hugetlb backings for the 4 KiB pages of a huge
     * page that stays (see {@link #punch}). There an allocated page that reads zero holds no data.
     */
    public boolean returnsPunchedMemory() {
        return file.returnsPunchedMemory() && file.blockSize() == PAGE_SIZE;
    }

    /**
     * Sets how long a conversion to private waits for pins before it fails with {@code EAGAIN}.
     *
     * @param wait from zero to {@link #MAX_PIN_WAIT}
     * @throws GuestMemoryException {@code EINVAL} for a negative wait or one longer than
     *                              {@link #MAX_PIN_WAIT} (nothing changes); {@code EBADF} when closed
     */
    public void pinWait(Duration wait) {
        java.util.Objects.requireNonNull(wait, "wait");
        String op = "pinWait(" + wait + ")";
        if (wait.isNegative() || wait.compareTo(MAX_PIN_WAIT) > 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "the pin wait must be between 0 and " + MAX_PIN_WAIT, -1);
        }
        lock.lock();
        try {
            ensureOpen(op);
            pinWait = wait;
        } finally {
            lock.unlock();
        }
    }

    // ---------------------------------------------------------------- allocate and punch

    /** {@code fallocate} mode bit: keep the size (required). */
    public static final int KEEP_SIZE = Fd.FALLOC_FL_KEEP_SIZE;
    /** {@code fallocate} mode bit: punch a hole. */
    public static final int PUNCH_HOLE = Fd.FALLOC_FL_PUNCH_HOLE;

    /**
     * The kernel's {@code fallocate} on a guest_memfd. Checked in the kernel's order: the VFS
     * first (negative, empty, mode, overflow), then guest_memfd (alignment, past the end).
     *
     * @param mode {@link #KEEP_SIZE}, optionally with {@link #PUNCH_HOLE}
     * @throws GuestMemoryException {@code EBADF} when closed; {@code EINVAL} for an offset that
     *                              is negative or a length that is not positive;
     *                              {@code EOPNOTSUPP} for a mode without KEEP_SIZE or with any
     *                              other bit; {@code EFBIG} when {@code offset + length}
     *                              overflows a {@code long}, as the VFS gives; {@code EINVAL} for
     *                              an offset or length that is not page aligned, or an
     *                              allocation past the end (a punch past the end is clamped)
     */
    public void fallocate(int mode, long offset, long length) {
        String op = "fallocate(mode=0x" + Integer.toHexString(mode) + ", offset=" + offset + ", len=" + length + ")";
        boolean punch = (mode & PUNCH_HOLE) != 0;
        Events.RangeEvent event = punch ? new Events.Punch() : new Events.Allocate();
        event.offset = offset;
        event.length = length;
        event.begin();
        try {
            ensureOpen(op);
            if (offset < 0 || length <= 0) {
                throw new GuestMemoryException(Errno.EINVAL, op, "offset must be >= 0 and length > 0", -1);
            }
            if ((mode & ~(KEEP_SIZE | PUNCH_HOLE)) != 0 || (mode & KEEP_SIZE) == 0) {
                throw new GuestMemoryException(Errno.EOPNOTSUPP, op, "mode must be KEEP_SIZE, optionally with PUNCH_HOLE", -1);
            }
            if (offset > Long.MAX_VALUE - length) {
                throw new GuestMemoryException(Errno.EFBIG, op, "offset + length overflows the largest file offset", -1);
            }
            if (offset % PAGE_SIZE != 0 || length % PAGE_SIZE != 0) {
                throw new GuestMemoryException(Errno.EINVAL, op, "offset and length must be page aligned", -1);
            }
            if (!punch && (offset > size || length > size - offset)) {
                throw new GuestMemoryException(Errno.EINVAL, op, "allocation past the end of the " + size + "-byte file", -1);
            }
            fetchFirst(op, offset, length);  // a later fetch would bring back what this frees
            lock.lock();
            try {
                ensureOpen(op);
                if (punch) {
                    // As the kernel does, a punch past the end is clamped, and may become a no-op.
                    long end = offset >= size ? offset : offset + Math.min(length, size - offset);
                    if (end > offset) {
                        punchLocked(op, offset, end - offset);
                    }
                } else {
                    file.allocate(offset, length);
                    hostView.mapAllocated(offset, length);
                    fallocated.set(page(offset), page(offset + length), true);
                    changed(offset, length);
                }
            } finally {
                lock.unlock();
            }
        } catch (LinuxException e) {
            event.result = e.errnoName();
            throw fromKernel(op, e);
        } catch (RuntimeException | Error e) {
            event.result = outcome(e);
            throw e;
        } finally {
            event.commit();
        }
    }

    /** Allocates the pages of a range: {@code fallocate(KEEP_SIZE, offset, length)}. */
    public void allocate(long offset, long length) {
        fallocate(KEEP_SIZE, offset, length);
    }

    /** Frees the pages of a range; they read as zero afterwards: {@code fallocate(KEEP_SIZE | PUNCH_HOLE, ...)}. */
    public void punchHole(long offset, long length) {
        fallocate(KEEP_SIZE | PUNCH_HOLE, offset, length);
    }

    /**
     * Punches a hole, as {@link #punchHole}, and says what became of the memory: on the
     * hugetlb backings only whole huge pages go back to the pool, the 4 KiB pieces of a huge
     * page that the range covers only in part are zeroed and the page stays.
     *
     * @return the bytes punched whole (their memory, if any, returned) and the bytes zeroed in place
     * @throws GuestMemoryException as {@link #fallocate} with {@link #PUNCH_HOLE}
     */
    public PunchResult punch(long offset, long length) {
        punchHole(offset, length);
        long end = offset >= size ? offset : offset + Math.min(length, size - offset);
        if (!file.returnsPunchedMemory()) {
            return new PunchResult(0, end - offset);
        }
        long block = file.blockSize();
        long wholeStart = Math.min(end, (offset + block - 1) / block * block);
        long wholeEnd = Math.max(wholeStart, end / block * block);
        return new PunchResult(wholeEnd - wholeStart, (end - offset) - (wholeEnd - wholeStart));
    }

    private void punchLocked(String op, long offset, long length) {
        waitWhileBusy(op, offset, length);
        invalidating(offset, length, Invalidation.PUNCH, () -> {
            file.punch(offset, length);
            fallocated.set(page(offset), page(offset + length), false);
            clearPoison(page(offset), page(offset + length));
            changed(offset, length);
        });
    }

    /**
     * Runs {@code change} between {@code invalidateBegin} and {@code invalidateEnd} of every
     * owner bound over the range; every begun invalidation is ended, also when the change or
     * an owner throws.
     */
    private void invalidating(long offset, long length, Invalidation why, Runnable change) {
        List<Binding> begun = new ArrayList<>(2);
        Throwable failure = null;
        try {
            for (Binding b : bindingsOver(offset, length)) {
                begun.add(b);  // before the call: a begin that throws half-way is still ended
                b.invalidateBegin(offset, length, why);
            }
            change.run();
        } catch (Throwable t) {
            failure = t;
            throw t;
        } finally {
            endInvalidation(begun, offset, length, why, failure);
        }
    }

    /**
     * Ends the invalidations begun, every one of them even when an owner throws. An owner's
     * exception is added to {@code failure}, the one already ending the operation, when there
     * is one; else the first is thrown.
     */
    private static void endInvalidation(List<Binding> begun, long offset, long length, Invalidation why, Throwable failure) {
        RuntimeException first = null;
        for (Binding b : begun) {
            try {
                b.invalidateEnd(offset, length, why);
            } catch (RuntimeException e) {
                if (failure != null) {
                    failure.addSuppressed(e);
                } else if (first == null) {
                    first = e;
                } else {
                    first.addSuppressed(e);
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }

    /**
     * Runs a call that grants a host reference or a binding (map, lease, pin, bind) or
     * populates pages, recorded as a {@code dev.guestmemfd.Reference} event with its real
     * outcome, refusals included.
     */
    <T> T recordedGrant(String kind, long offset, long length, java.util.function.Supplier<T> call) {
        Events.Reference event = new Events.Reference();
        event.kind = kind;
        event.offset = offset;
        event.length = length;
        event.begin();
        try {
            return call.get();
        } catch (RuntimeException | Error e) {
            event.result = outcome(e);
            throw e;
        } finally {
            event.commit();
        }
    }

    /** {@return the outcome a flight recorder event reports: the errno name, or the exception's class} */
    private static String outcome(Throwable e) {
        return e instanceof GuestMemoryException g ? g.errno().name() : e.getClass().getName();
    }

    // ---------------------------------------------------------------- conversion

    /**
     * Converts a range to shared or private, whole or not at all.
     *
     * <p>To private: new host references over the range wait; pins and scoped host accesses
     * over it are waited for (at most the pin wait each), then every lease over it is
     * revoked and the pages are taken out of the host's mapping (a segment a native call
     * holds reaches zeros from then on), the owners are told, and only then do the pages
     * change. To shared: the owners are asked first. Pages already in the target state keep
     * their state; the content mode applies to the whole range all the same, as the kernel's
     * {@code KVM_SET_MEMORY_ATTRIBUTES2} applies it: {@link Content#ZERO} zeroes every page of
     * the range, also those that were shared already.
     *
     * <p>Every refusal carries the offset the kernel would put in {@code error_offset}
     * ({@link GuestMemoryException#errorOffset()}), and changes nothing.
     *
     * @throws GuestMemoryException {@code EINVAL} for an unaligned, empty or out-of-file range
     *                              (no error offset);
     *                              {@code EOPNOTSUPP} for {@link Content#ZERO} towards private,
     *                              or a content mode an owner of the range cannot give
     *                              (error offset: the start of the range, as the kernel gives);
     *                              {@code EAGAIN} when a pin or a scoped host access outlived
     *                              the wait (error offset: the first page still referenced);
     *                              {@code EPERM} when an owner refused (error offset: the page);
     *                              {@code EHWPOISON} when a page of the range is poisoned (error
     *                              offset: the first such page; punch it first);
     *                              {@code EBADF} when closed
     */
    public void convert(long offset, long length, Attribute target, Content content) {
        String op = "convert(offset=" + offset + ", len=" + length + ", " + target + ", " + content + ")";
        Events.Convert event = new Events.Convert();
        event.offset = offset;
        event.length = length;
        event.target = String.valueOf(target);
        event.content = String.valueOf(content);
        event.begin();
        try {
            java.util.Objects.requireNonNull(target, "target");
            java.util.Objects.requireNonNull(content, "content");
            ensureOpen(op);
            checkRange(op, offset, length);
            if (content == Content.ZERO && target == Attribute.PRIVATE) {
                // The host cannot vouch for what the guest reads: the kernel refuses this whatever the VM type.
                throw new GuestMemoryException(Errno.EOPNOTSUPP, op, "ZERO is a content mode towards shared only", offset);
            }
            fetchFirst(op, offset, length);
            lock.lock();
            try {
                ensureOpen(op);
                convertLocked(op, offset, length, target, content);
            } finally {
                lock.unlock();
            }
        } catch (LinuxException e) {
            event.result = e.errnoName();
            throw fromKernel(op, e);
        } catch (RuntimeException | Error e) {
            event.result = outcome(e);
            throw e;
        } finally {
            event.commit();
        }
    }

    private void convertLocked(String op, long offset, long length, Attribute target, Content content) {
        waitWhileBusy(op, 0, size);  // one conversion at a time: the busy range is a single range
        boolean toPrivate = target == Attribute.PRIVATE;
        if (content != Content.UNSPECIFIED) {
            for (Binding b : bindingsOver(offset, length)) {
                if (!b.supportsContent(target, content)) {
                    throw new GuestMemoryException(Errno.EOPNOTSUPP, op, "the owner of [" + b.offset() + ", "
                            + (b.offset() + b.length()) + ") cannot give " + content + " towards " + target, offset);
                }
            }
        }
        long first = page(offset);
        long end = page(offset + length);
        checkNotPoisoned(op, offset, length);
        if ((toPrivate ? attributes.firstClear(first, end) : attributes.firstSet(first, end)) < 0) {
            if (content == Content.ZERO) {
                // Nothing changes state, but the mode applies to the whole range: a punch, told as a conversion.
                invalidating(offset, length, Invalidation.CONVERSION, () -> zeroRange(offset, length));
            }
            return;
        }
        busyStart = offset;
        busyEnd = offset + length;
        busyThread = Thread.currentThread();
        gate.block(first, end);
        try {
            if (toPrivate) {
                awaitNoPins(op, offset, length);
            }
            invalidating(offset, length, Invalidation.CONVERSION, () -> {
                if (toPrivate) {
                    revokeLeases(op, offset, length);
                }
                List<Object[]> prepared = prepareOwners(op, offset, length, toPrivate, content);
                if (file.kernelConverts()) {
                    kernelConvert(op, offset, length, toPrivate, content, prepared);
                }
                if (content == Content.ZERO) {
                    zeroRange(offset, length);  // towards shared only: pages shared already are zeroed too
                } else if (content == Content.UNSPECIFIED && !toPrivate) {
                    // Our choice where the mode promises nothing: no private byte reaches the host unasked.
                    zeroChanging(first, end, toPrivate);
                }
                long stamp = bitsLock.writeLock();
                try {
                    attributes.set(first, end, toPrivate);
                } finally {
                    bitsLock.unlockWrite(stamp);
                }
                conversions++;
                changed(offset, length);
            });
        } finally {
            endConversion(first, end);
            busyStart = busyEnd = -1;
            busyThread = null;
            changed.signalAll();
        }
    }

    /** Waits at most the pin wait for the pins over the range to go; EBADF when the file closes meanwhile. */
    private void awaitNoPins(String op, long offset, long length) {
        long remaining = pinWait.toNanos();
        Pin pinned;
        while ((pinned = firstPinOver(offset, length)) != null && remaining > 0) {
            remaining = awaitNanos(remaining);
            ensureOpen(op);  // close() dropped the pins: that is no reason to go on
        }
        if (pinned != null) {
            long at = Math.max(offset, pinned.offset());
            throw new GuestMemoryException(Errno.EAGAIN, op, "page at offset " + at + " is still pinned after "
                    + pinWait.toMillis() + " ms", at);
        }
    }

    private long awaitNanos(long nanos) {
        try {
            return changed.awaitNanos(nanos);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return 0;
        }
    }

    private Pin firstPinOver(long offset, long length) {
        Pin first = null;
        for (Pin p : pins) {
            if (overlaps(p.offset(), p.length(), offset, length) && (first == null || p.offset() < first.offset())) {
                first = p;
            }
        }
        return first;
    }

    private void revokeLeases(String op, long offset, long length) {
        Events.Revoke event = new Events.Revoke();
        event.offset = offset;
        event.length = length;
        event.begin();
        try {
            revokeLeasesOver(op, offset, length, event);
        } catch (GuestMemoryException e) {
            event.result = e.errno().name();
            throw e;
        } finally {
            if (event.leases > 0 || !event.result.equals("ok")) {
                event.commit();
            }
        }
    }

    /**
     * Revokes host access to the range before its pages become private, in three layers: waits
     * for the scoped accesses in flight over it (new ones wait at the gate), closes every lease
     * over it, and replaces its pages in the host's mapping wherever a lease or pin was ever
     * handed out, so that a segment a native call still holds reaches no page of the file.
     */
    private void revokeLeasesOver(String op, long offset, long length, Events.Revoke event) {
        if (!gate.awaitQuiet(page(offset), page(offset + length), pinWait.toNanos())) {
            long busy = gate.firstBusy(page(offset), page(offset + length));
            long at = busy < 0 ? offset : busy * PAGE_SIZE;  // the access left since the deadline: name the range's start
            throw new GuestMemoryException(Errno.EAGAIN, op, "a host access at offset " + at + " is still in flight after "
                    + pinWait.toMillis() + " ms", at);
        }
        for (var it = leases.iterator(); it.hasNext(); ) {
            Lease lease = it.next();
            if (overlaps(lease.fileOffset(), lease.length(), offset, length)) {
                endLease(lease);
                it.remove();
                event.leases++;
            }
        }
        hostView.revoke(offset, length);
    }

    /** Revokes a lease; one that a native call holds is kept by the host view until the call lets go. */
    private void endLease(Lease lease) {
        if (!lease.revoke()) {
            hostView.hold(lease.arena(), lease.fileOffset(), lease.length());
        }
    }

    /** Ends a pin's segment; one that a native call holds is kept by the host view until the call lets go. */
    private void endPin(Pin pin) {
        if (!pin.release()) {
            hostView.hold(pin.arena(), pin.offset(), pin.length());
        }
    }

    /**
     * Brings the host's mapping and the lock-free copy of the attributes in line with the
     * attributes over pages {@code [first, end)} once a conversion ends, changed or refused,
     * then lets host accesses to them in. Shared pages whose file mapping the kernel refused
     * to restore stay private for host access: they fault rather than read the dummy page.
     */
    private void endConversion(long first, long end) {
        try {
            List<long[]> unrestoredRuns = new ArrayList<>(0);
            // On a hugetlb file a huge page comes back into host references only when all of
            // it is shared: look at the whole huge pages around the range.
            long granule = hostView.granule() / PAGE_SIZE;
            attributes.forEachRun(first / granule * granule, Math.min(pages, (end + granule - 1) / granule * granule), false, (from, to) -> {
                long failed = hostView.restore(from * PAGE_SIZE, (to - from) * PAGE_SIZE);
                if (failed >= 0) {
                    unrestoredRuns.add(new long[] {page(failed), to});
                }
            });
            if (!unrestoredRuns.isEmpty() || (anyUnrestored && this.unrestored.firstSet(first, end) >= 0)) {
                long stamp = bitsLock.writeLock();
                try {
                    anyUnrestored |= !unrestoredRuns.isEmpty();
                    this.unrestored.set(first, end, false);
                    for (long[] run : unrestoredRuns) {
                        this.unrestored.set(run[0], run[1], true);
                    }
                } finally {
                    bitsLock.unlockWrite(stamp);
                }
            }
        } finally {
            gate.unblock();
        }
    }

    /**
     * Asks the owners to prepare each run of pages that changes state (pages already in the
     * target state are not theirs to prepare); on a refusal, rolls back every run prepared.
     */
    private List<Object[]> prepareOwners(String op, long offset, long length, boolean toPrivate, Content content) {
        List<long[]> changing = new ArrayList<>();
        attributes.forEachRun(page(offset), page(offset + length), !toPrivate,
                (from, to) -> changing.add(new long[] {from * PAGE_SIZE, (to - from) * PAGE_SIZE}));
        List<Object[]> done = new ArrayList<>();
        for (long[] run : changing) {
            for (Binding b : bindingsOver(run[0], run[1])) {
                try {
                    b.prepare(run[0], run[1], toPrivate, content);
                    done.add(new Object[] {b, run});
                } catch (RuntimeException | Error e) {
                    // An owner's own failure is no refusal, but the others must not stay prepared.
                    rollbackPrepared(done, toPrivate, e);
                    throw e;
                } catch (OwnerRefusal refusal) {
                    Events.OwnerRefusal event = new Events.OwnerRefusal();
                    event.offset = refusal.offset();
                    event.length = offset + length - refusal.offset();
                    event.reason = refusal.getMessage();
                    event.result = "EPERM";
                    event.commit();
                    GuestMemoryException refused = new GuestMemoryException(Errno.EPERM, op, "owner refused page at offset "
                            + refusal.offset() + ": " + refusal.getMessage(), refusal.offset());
                    rollbackPrepared(done, toPrivate, refused);
                    throw refused;
                }
            }
        }
        return done;
    }

    /**
     * Has the kernel convert the range with {@code KVM_SET_MEMORY_ATTRIBUTES2}, on a file whose
     * kernel converts in place: after the owners accepted, before any page changes here. The
     * library still zeroes for ZERO itself (the kernel's ZERO is towards shared only too, and
     * zeroing twice costs little), so the content mode goes to the kernel as asked. A refusal
     * rolls the owners back and carries the kernel's errno and {@code error_offset}.
     */
    private void kernelConvert(String op, long offset, long length, boolean toPrivate, Content content,
                               List<Object[]> prepared) {
        long mode = switch (content) {
            case UNSPECIFIED -> dev.guestmemfd.linux.KvmUapi.KVM_SET_MEMORY_ATTRIBUTES2_MODE_UNSPECIFIED;
            case ZERO -> dev.guestmemfd.linux.KvmUapi.KVM_SET_MEMORY_ATTRIBUTES2_ZERO;
            case PRESERVE -> dev.guestmemfd.linux.KvmUapi.KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE;
        };
        try {
            file.setAttributes(offset, length, toPrivate, mode);
        } catch (BackingFile.AttributesRefused e) {
            GuestMemoryException refused = new GuestMemoryException(Errno.of(e.errno()), op,
                    "the kernel refused KVM_SET_MEMORY_ATTRIBUTES2" + (e.errorOffset() >= 0 ? " at offset " + e.errorOffset() : ""),
                    e.errorOffset());
            rollbackPrepared(prepared, toPrivate, refused);
            throw refused;
        }
    }

    /**
     * {@return true when the kernel converts this file's pages itself, with its own
     * {@code KVM_SET_MEMORY_ATTRIBUTES2} on the guest_memfd} Only a {@link Backing#KERNEL} file
     * on a VM whose kernel reports {@code KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES} (the in-place
     * conversion series; no released kernel yet); elsewhere the library converts alone.
     */
    public boolean kernelConverts() {
        return file.kernelConverts();
    }

    /** Rolls back the preparations done, newest first, every one even when an owner throws. */
    private static void rollbackPrepared(List<Object[]> done, boolean toPrivate, Throwable failure) {
        for (int i = done.size() - 1; i >= 0; i--) {
            long[] r = (long[]) done.get(i)[1];
            try {
                ((Binding) done.get(i)[0]).rollback(r[0], r[1], toPrivate);
            } catch (RuntimeException e) {
                failure.addSuppressed(e);
            }
        }
    }

    /** Zeroes every page of the range, in whatever state; caller brackets it with an invalidation. */
    private void zeroRange(long offset, long length) {
        file.punch(offset, length);
        fallocated.set(page(offset), page(offset + length), false);
        changed(offset, length);
    }

    /** Zeroes the pages of {@code [first, end)} that are not yet in the target state. */
    private void zeroChanging(long first, long end, boolean toPrivate) {
        attributes.forEachRun(first, end, !toPrivate, (from, to) -> {
            file.punch(from * PAGE_SIZE, (to - from) * PAGE_SIZE);
            fallocated.set(from, to, false);
        });
    }

    // ---------------------------------------------------------------- host references

    /**
     * Maps a range of the file for host access. As with {@code mmap}, the range may reach past
     * the end of the file; pages past the end fault when touched.
     *
     * @param offset a page-aligned file offset
     * @param length bytes, positive
     * @param type   {@link MapType#SHARED}; private (copy-on-write) mappings are refused
     * @throws GuestMemoryException {@code ENODEV} without {@link Flag#MMAP}; {@code EINVAL} for
     *                              a private mapping or an unaligned offset or empty length;
     *                              {@code EOVERFLOW} when the end of the mapping (offset plus
     *                              length rounded up to a page) does not fit in a {@code long},
     *                              as {@code mmap} gives when the page offset wraps;
     *                              {@code EHWPOISON} when a page of the file in the range is
     *                              poisoned; {@code EBADF} when closed
     */
    public HostMapping map(long offset, long length, MapType type) {
        return recordedGrant("map", offset, length, () -> mapUnrecorded(offset, length, type));
    }

    private HostMapping mapUnrecorded(long offset, long length, MapType type) {
        java.util.Objects.requireNonNull(type, "type");
        String op = "mmap(offset=" + offset + ", len=" + length + ", " + type + ")";
        lock.lock();
        try {
            ensureOpen(op);
            if (!flags.contains(Flag.MMAP)) {
                throw new GuestMemoryException(Errno.ENODEV, op, "the file was created without MMAP", -1);
            }
            if (type != MapType.SHARED) {
                throw new GuestMemoryException(Errno.EINVAL, op, "guest memory cannot be mapped copy-on-write", -1);
            }
            if (offset < 0 || offset % PAGE_SIZE != 0 || length <= 0) {
                throw new GuestMemoryException(Errno.EINVAL, op, "offset must be page aligned and length positive", -1);
            }
            if (length > Long.MAX_VALUE - (PAGE_SIZE - 1) || offset > Long.MAX_VALUE - roundUp(length)) {
                throw new GuestMemoryException(Errno.EOVERFLOW, op, "the mapping would end past the largest file offset", -1);
            }
            if (offset < size) {
                checkNotPoisoned(op, offset, Math.min(roundUp(length), size - offset));
            }
            return new HostMapping(this, offset, length);
        } finally {
            lock.unlock();
        }
    }

    /** Maps a range for host access: {@code map(offset, length, MapType.SHARED)}. */
    public HostMapping map(long offset, long length) {
        return map(offset, length, MapType.SHARED);
    }

    /**
     * Pins shared pages for I/O: the pins' segment stays valid until {@link Pin#close()}, and
     * conversions to private of its pages wait for it, then fail.
     *
     * @throws GuestMemoryException {@code EINVAL} for an unaligned, empty or out-of-file range;
     *                              {@code EHWPOISON} when a page is poisoned; {@code EFAULT} when
     *                              a page is private; {@code EBADF} when closed
     */
    public Pin pin(long offset, long length) {
        return recordedGrant("pin", offset, length, () -> pinUnrecorded(offset, length));
    }

    private Pin pinUnrecorded(long offset, long length) {
        String op = "pin(offset=" + offset + ", len=" + length + ")";
        ensureOpen(op);
        checkRange(op, offset, length);
        fetchFirst(op, offset, length);
        lock.lock();
        try {
            ensureOpen(op);
            waitWhileBusy(op, offset, length);
            checkNotPoisoned(op, offset, length);
            long priv = attributes.firstSet(page(offset), page(offset + length));
            if (priv >= 0) {
                throw new GuestMemoryException(Errno.EFAULT, op, "page at offset " + priv * PAGE_SIZE + " is private",
                        priv * PAGE_SIZE);
            }
            Arena arena = Arena.ofShared();
            Pin pin;
            try {
                pin = new Pin(this, offset, length, arena, hostView.reference(offset, length, arena));
            } catch (LinuxException e) {
                arena.close();
                throw fromKernel(op, e);
            }
            pins.add(pin);
            hostView.expose(offset, length);
            changed(offset, length);
            return pin;
        } finally {
            lock.unlock();
        }
    }

    void unpin(Pin pin) {
        lock.lock();
        try {
            if (pins.remove(pin)) {
                endPin(pin);
                changed.signalAll();
            }
        } finally {
            lock.unlock();
        }
    }

    /** Grants a lease over {@code [fileOffset, fileOffset + length)}; host code may touch only shared pages in the file. */
    Lease lease(HostMapping mapping, long fileOffset, long length, String op) {
        return withHostAccess(mapping, fileOffset, length, op, () -> {
            Arena arena = Arena.ofShared();
            Lease lease;
            try {
                lease = new Lease(this, mapping, fileOffset, length, arena, hostView.reference(fileOffset, length, arena));
            } catch (LinuxException e) {
                arena.close();
                throw e;
            }
            leases.add(lease);
            hostView.expose(fileOffset, length);
            changed(fileOffset, length);  // it may write until revoked; drain() counts it again while live
            return lease;
        });
    }

    /**
     * Runs {@code access} under the lock once every page of the range is known to be shared,
     * inside the file, not being converted, and the mapping and file open: the one gate of
     * all host access.
     */
    private <T> T withHostAccess(HostMapping mapping, long fileOffset, long length, String op,
                                 java.util.function.Supplier<T> access) {
        fetchFirst(op, fileOffset, length);
        lock.lock();
        try {
            ensureOpen(op);
            ensureMapped(mapping, op);
            waitWhileBusy(op, fileOffset, length);
            checkHostAccess(op, fileOffset, length);
            return access.get();
        } catch (LinuxException e) {
            throw fromKernel(op, e);
        } finally {
            lock.unlock();
        }
    }

    void release(Lease lease) {
        lock.lock();
        try {
            if (leases.remove(lease)) {
                endLease(lease);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Runs {@code action} with a confined segment over {@code [fileOffset, fileOffset + length)}
     * of the host view while every page of it is shared: a scoped access, announced at the
     * gate, so that a conversion of these pages waits for it and no other does.
     */
    <T> T access(HostMapping mapping, long fileOffset, long length, Function<? super MemorySegment, ? extends T> action) {
        enterHost(mapping, fileOffset, length, "access");
        try (Arena arena = Arena.ofConfined()) {
            return action.apply(length == 0 ? MemorySegment.NULL : hostView.view(fileOffset, length, arena));
        } finally {
            exitHost(fileOffset, length);
        }
    }

    /** Copies between the file and host memory as a scoped access: no file-wide lock. */
    void hostCopy(HostMapping mapping, long fileOffset, MemorySegment host, boolean toFile) {
        long length = host.byteSize();
        enterHost(mapping, fileOffset, length, toFile ? "write" : "read");
        try {
            if (toFile) {
                MemorySegment.copy(host, 0, hostView.pages(), fileOffset, length);
            } else {
                MemorySegment.copy(hostView.pages(), fileOffset, host, 0, length);
            }
        } finally {
            exitHost(fileOffset, length);
        }
        // A plain read of the list's size: a log opened while this write ran may miss it, as it
        // may miss a lease's write made at that moment. Marked after the gate: a conversion
        // waiting there holds the lock.
        if (toFile && !changeLogs.isEmpty()) {
            lock.lock();
            try {
                changed(fileOffset, length);
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * Announces a host access at the gate and checks it: file and mapping open, every page
     * shared and inside the file. On any failure nothing stays announced.
     */
    private void enterHost(HostMapping mapping, long fileOffset, long length, String kind) {
        LazyRestore restore = lazyRestore;
        if (restore != null) {
            restore.ensureResident(kind, fileOffset, length);
        }
        long first = page(fileOffset);
        long end = Math.min(pages, page(fileOffset + length + PAGE_SIZE - 1));
        boolean entered = first < end && length > 0;
        if (entered && !gate.enter(first, end)) {
            throw new GuestMemoryException(Errno.EBADF, hostOp(kind, mapping, fileOffset, length), "the file is closed", -1);
        }
        try {
            if (closed) {
                throw new GuestMemoryException(Errno.EBADF, hostOp(kind, mapping, fileOffset, length), "the file is closed", -1);
            }
            if (mapping.isClosed()) {
                throw new GuestMemoryException(Errno.EFAULT, hostOp(kind, mapping, fileOffset, length), "the mapping was unmapped", -1);
            }
            checkShared(kind, mapping, fileOffset, length);
        } catch (RuntimeException e) {
            if (entered) {
                gate.exit(first, end);
            }
            throw e;
        }
    }

    private void exitHost(long fileOffset, long length) {
        long first = page(fileOffset);
        long end = Math.min(pages, page(fileOffset + length + PAGE_SIZE - 1));
        if (first < end && length > 0) {
            gate.exit(first, end);
        }
    }

    /** As {@link #checkHostAccess}, from the lock-free copy of the attributes: call it announced at the gate. */
    private void checkShared(String kind, HostMapping mapping, long fileOffset, long length) {
        // The rules of checkHostAccess, overflow-safe, with an empty access past the end faulting too.
        if (fileOffset > size || (fileOffset == size && length > 0)) {
            throw new HostAccessFault(hostOp(kind, mapping, fileOffset, length), page(fileOffset) * PAGE_SIZE,
                    "past the end of the " + size + "-byte file");
        }
        long inFile = Math.min(length, size - fileOffset);
        if (inFile > 0 && poisoned.any()) {
            long bad = poisoned.firstUnlocked(page(fileOffset), page(fileOffset + inFile + PAGE_SIZE - 1));
            if (bad >= 0) {
                throw poisonedAt(hostOp(kind, mapping, fileOffset, length), bad);
            }
        }
        if (inFile > 0) {
            long priv = firstHostPrivate(page(fileOffset), page(fileOffset + inFile + PAGE_SIZE - 1));
            if (priv >= 0) {
                throw new HostAccessFault(hostOp(kind, mapping, fileOffset, length), priv * PAGE_SIZE, "the page is private");
            }
        }
        if (length > inFile) {
            throw new HostAccessFault(hostOp(kind, mapping, fileOffset, length), size, "past the end of the " + size + "-byte file");
        }
    }

    /**
     * {@return the first page of {@code [start, end)} that host code may not reach (private,
     * or not mapped back), or -1} Without the file's lock: an optimistic read of the bits,
     * validated; a read that raced with a conversion's write, or that the racing write made
     * throw, is done again under the read lock.
     */
    private long firstHostPrivate(long start, long end) {
        long stamp = bitsLock.tryOptimisticRead();
        if (stamp != 0) {
            try {
                long found = firstNotReachable(start, end);
                if (bitsLock.validate(stamp)) {
                    return found;
                }
            } catch (RuntimeException tornByAWriter) {
                // the bits changed under the read: read them again below, under the lock
            }
        }
        stamp = bitsLock.readLock();
        try {
            return firstNotReachable(start, end);
        } finally {
            bitsLock.unlockRead(stamp);
        }
    }

    private long firstNotReachable(long start, long end) {
        long priv = attributes.firstSet(start, end);
        if (!anyUnrestored) {
            return priv;
        }
        long lost = unrestored.firstSet(start, end);
        return priv < 0 ? lost : lost < 0 ? priv : Math.min(priv, lost);
    }

    /** The operation's name, built only when it fails: the fast path allocates no string. */
    private static String hostOp(String kind, HostMapping mapping, long fileOffset, long length) {
        return kind + "(offset=" + (fileOffset - mapping.offset()) + ", len=" + length + ")";
    }

    /** Faults shared pages in for writing, after checking every page. */
    void hostPrefault(HostMapping mapping, long fileOffset, long length, String op) {
        withHostAccess(mapping, fileOffset, length, op, () -> {
            if (length == 0) {
                return null;  // checked; an empty range faults in no page, not even the one it starts in
            }
            long start = fileOffset / PAGE_SIZE * PAGE_SIZE;
            long end = (fileOffset + length + PAGE_SIZE - 1) / PAGE_SIZE * PAGE_SIZE;
            file.prefault(start, end - start);
            changed(start, end - start);
            return null;
        });
    }

    void unmap(HostMapping mapping) {
        lock.lock();
        try {
            for (var it = leases.iterator(); it.hasNext(); ) {
                Lease lease = it.next();
                if (lease.mapping() == mapping) {
                    endLease(lease);
                    it.remove();
                }
            }
        } finally {
            lock.unlock();
        }
    }

    private void ensureMapped(HostMapping mapping, String op) {
        if (mapping.isClosed()) {
            throw new GuestMemoryException(Errno.EFAULT, op, "the mapping was unmapped", -1);
        }
    }

    /**
     * Faults an access to {@code [fileOffset, fileOffset + length)} (offset and length not
     * negative) that reaches a private page or leaves the file, at the first such page.
     * Overflow-safe: nothing is added before the range is known to be inside the file.
     */
    private void checkHostAccess(String op, long fileOffset, long length) {
        if (fileOffset > size || (fileOffset == size && length > 0)) {
            throw new HostAccessFault(op, page(fileOffset) * PAGE_SIZE, "past the end of the " + size + "-byte file");
        }
        long inFile = Math.min(length, size - fileOffset);
        if (inFile > 0) {
            checkNotPoisoned(op, fileOffset, inFile);
        }
        long priv = attributes.firstSet(page(fileOffset), page(fileOffset + inFile + PAGE_SIZE - 1));
        if (inFile > 0 && priv >= 0) {
            throw new HostAccessFault(op, priv * PAGE_SIZE, "the page is private");
        }
        if (length > inFile) {
            throw new HostAccessFault(op, size, "past the end of the " + size + "-byte file");
        }
    }

    // ---------------------------------------------------------------- owners

    /**
     * Binds a range of the file to an owner: from now on it receives the invalidations and
     * preparations of that range, and may read and write its pages, private ones included.
     *
     * @throws GuestMemoryException {@code EINVAL} for an unaligned, empty or out-of-file range,
     *                              or one that overlaps another binding's; {@code EBADF} when closed
     */
    public Binding bind(Owner owner, long offset, long length) {
        return recordedGrant("bind", offset, length, () -> bindUnrecorded(owner, offset, length));
    }

    private Binding bindUnrecorded(Owner owner, long offset, long length) {
        java.util.Objects.requireNonNull(owner, "owner");
        String op = "bind(offset=" + offset + ", len=" + length + ")";
        ensureOpen(op);
        checkRange(op, offset, length);
        lock.lock();
        try {
            ensureOpen(op);
            waitWhileBusy(op, offset, length);  // the owner reads the pages' attributes when bound
            for (Binding b : bindings) {
                if (overlaps(b.offset(), b.length(), offset, length)) {
                    throw new GuestMemoryException(Errno.EINVAL, op, "file range [" + b.offset() + ", "
                            + (b.offset() + b.length()) + ") is already bound", Math.max(offset, b.offset()));
                }
            }
            Arena arena = Arena.ofShared();
            Binding binding = new Binding(this, owner, offset, length, arena, Mman.view(file.pages(), offset, length, arena));
            bindings.add(binding);
            try {
                owner.bound(binding);
            } catch (RuntimeException | Error e) {
                // The owner did not take the range: leave nothing of the binding behind.
                bindings.remove(binding);
                binding.end();
                throw e;
            }
            return binding;
        } finally {
            lock.unlock();
        }
    }

    void unbind(Binding binding) {
        lock.lock();
        try {
            if (bindings.remove(binding)) {
                binding.end();
                binding.owner().release(binding);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Keeps a binding's arena that a native call holds; see {@link BackingFile#keep}. */
    void keepOwnerView(Arena view) {
        file.keep(view);
    }

    /**
     * Brings {@code [offset, offset + length)} in from a lazy restore still running, before the
     * caller touches it; nothing when none runs.
     */
    void fetchFirst(String op, long offset, long length) {
        LazyRestore restore = lazyRestore;
        if (restore != null) {
            restore.ensureResident(op, offset, length);
        }
    }

    /** Runs {@code action} with the lock held, after checking that the file is open. */
    void locked(String op, Runnable action) {
        lock.lock();
        try {
            ensureOpen(op);
            action.run();
        } finally {
            lock.unlock();
        }
    }

    /**
     * {@return what {@code call} gives, run with the lock held after checking that the file is
     * open} A refusal of the kernel's becomes the file's exception.
     */
    private <T> T kernelLocked(String op, Supplier<T> call) {
        lock.lock();
        try {
            ensureOpen(op);
            return call.get();
        } catch (LinuxException e) {
            throw fromKernel(op, e);
        } finally {
            lock.unlock();
        }
    }

    private List<Binding> bindingsOver(long offset, long length) {
        List<Binding> over = new ArrayList<>(2);
        for (Binding b : bindings) {
            if (overlaps(b.offset(), b.length(), offset, length)) {
                over.add(b);
            }
        }
        return over;
    }

    // ---------------------------------------------------------------- NUMA placement

    /**
     * Sets the memory policy of a range: the NUMA nodes its pages come from. The policy belongs
     * to the file's range, not to a mapping ({@code mbind(2)} on the library's mapping of a
     * file whose kernel keeps a shared policy per range): allocation, populate, host and guest
     * faults all allocate by it, and it stays across punch and refill until set again. Pages
     * already allocated are moved to the policy's nodes where the kernel can move them.
     *
     * @param offset a page-aligned file offset
     * @param length bytes, a positive multiple of the page size, inside the file
     * @param policy the policy; {@link MemoryPolicy#DEFAULT} removes the range's own policy
     * @throws GuestMemoryException {@code EINVAL} for an unaligned, empty or out-of-file range,
     *                              an empty node set, or a node this host has no memory on
     *                              (nothing changes); {@code EOPNOTSUPP} on a backing whose
     *                              kernel keeps no policy per range of the file, or where the
     *                              library has not verified that it does (SECRET, HUGETLB, and
     *                              KERNEL before Linux 6.19); {@code EBADF} when closed;
     *                              {@code ENOMEM} when the kernel runs out of mappings
     *                              ({@code vm.max_map_count}) to keep the policies apart
     */
    public void setPolicy(long offset, long length, MemoryPolicy policy) {
        java.util.Objects.requireNonNull(policy, "policy");
        String op = "setPolicy(offset=" + offset + ", len=" + length + ", " + policy + ")";
        ensureOpen(op);
        checkRange(op, offset, length);
        KernelPolicy kernel = placement.check(op, policy);
        kernelLocked(op, () -> {
            placement.set(offset, length, kernel);
            return null;
        });
    }

    /**
     * {@return the memory policy of the page at {@code offset}} as the kernel reports it
     * ({@code get_mempolicy(2)} with {@code MPOL_F_ADDR}).
     *
     * @throws GuestMemoryException {@code EINVAL} for an offset outside the file;
     *                              {@code EOPNOTSUPP} when the kernel reports a policy that
     *                              {@link MemoryPolicy} does not name (set by other means);
     *                              {@code EBADF} when closed
     */
    public MemoryPolicy policy(long offset) {
        String op = "policy(offset=" + offset + ")";
        ensureOpen(op);
        if (offset < 0 || offset >= size) {
            throw new GuestMemoryException(Errno.EINVAL, op, "offset is outside the " + size + "-byte file", -1);
        }
        return kernelLocked(op, () -> placement.get(op, offset / PAGE_SIZE * PAGE_SIZE));
    }

    // ---------------------------------------------------------------- memory failure

    /**
     * Reports that the page at {@code offset} has failed (the kernel's memory_failure, a
     * hardware-poisoned page): an owner learnt it from its hardware, or the host from a
     * machine check. The page keeps its memory, as the kernel's guest_memfd keeps the folio,
     * but nothing reaches it any more: every owner bound over it gets an invalidation
     * ({@link Invalidation#MEMORY_FAILURE}); leases over it are revoked and the host's mapping
     * of it replaced, so a segment still held reads zeros, never the failed page; from then on
     * host accesses, leases, pins and maps that cover it, populate into it, and conversions
     * over it fail with {@code EHWPOISON}. Punching the page clears the mark: it becomes a
     * hole, allocated afresh when next touched.
     *
     * @return true when the page was newly marked, false when it already was
     * @throws GuestMemoryException {@code EINVAL} for an offset that is unaligned or outside
     *                              the file, or a page that holds no memory (a hole: no memory
     *                              there can fail); {@code EBADF} when closed; {@code EDEADLK}
     *                              from an owner callback of a conversion
     */
    public boolean reportMemoryFailure(long offset) {
        String op = "reportMemoryFailure(offset=" + offset + ")";
        Events.MemoryFailure event = new Events.MemoryFailure();
        event.offset = offset;
        event.length = PAGE_SIZE;
        event.begin();
        try {
            ensureOpen(op);
            if (offset < 0 || offset % PAGE_SIZE != 0 || offset >= size) {
                throw new GuestMemoryException(Errno.EINVAL, op, "offset must be page aligned and inside the " + size
                        + "-byte file", -1);
            }
            // A page a lazy restore has not brought yet has memory all the same: bring it, then
            // mark it, so the answer does not depend on how far the restore got.
            fetchFirst(op, offset, PAGE_SIZE);
            lock.lock();
            try {
                ensureOpen(op);
                boolean marked = poisonLocked(op, offset);
                event.newly = marked;
                return marked;
            } finally {
                lock.unlock();
            }
        } catch (LinuxException e) {
            event.result = e.errnoName();
            throw fromKernel(op, e);
        } catch (RuntimeException | Error e) {
            event.result = outcome(e);
            throw e;
        } finally {
            event.commit();
        }
    }

    private boolean poisonLocked(String op, long offset) {
        waitWhileBusy(op, 0, size);  // the page is the busy range while it is taken away
        long p = page(offset);
        if (poisoned.isMarked(p)) {
            return false;
        }
        if (!fallocated.isSet(p) && !isResident(offset)) {
            throw new GuestMemoryException(Errno.EINVAL, op, "the page at offset " + offset + " is a hole: no memory to fail",
                    offset);
        }
        busyStart = offset;
        busyEnd = offset + PAGE_SIZE;
        busyThread = Thread.currentThread();
        gate.block(p, p + 1);
        try {
            // Accesses in flight finish with the page's bytes; later ones are refused. One that
            // outlives the wait reads the dummy page from the revocation on, never the failed one.
            gate.awaitQuiet(p, p + 1, pinWait.toNanos());
            invalidating(offset, PAGE_SIZE, Invalidation.MEMORY_FAILURE, () -> {
                for (var it = leases.iterator(); it.hasNext(); ) {
                    Lease lease = it.next();
                    if (overlaps(lease.fileOffset(), lease.length(), offset, PAGE_SIZE)) {
                        endLease(lease);
                        it.remove();
                    }
                }
                hostView.revoke(offset, PAGE_SIZE);
                poisoned.mark(p);
                changed(offset, PAGE_SIZE);
            });
            return true;
        } finally {
            gate.unblock();
            busyStart = busyEnd = -1;
            busyThread = null;
            changed.signalAll();
        }
    }

    /** {@return true when the kernel holds memory for the page at {@code offset}} */
    private boolean isResident(long offset) {
        boolean[] resident = {false};
        BackingFile.forEachResidentRun(file, offset, PAGE_SIZE, (o, l) -> resident[0] = true);
        return resident[0];
    }

    /**
     * {@return the file offsets of the poisoned pages, in order}
     *
     * @throws GuestMemoryException {@code EBADF} when closed
     */
    public List<Long> poisonedPages() {
        lock.lock();
        try {
            ensureOpen("poisonedPages()");
            List<Long> offsets = new ArrayList<>();
            for (long p : poisoned.marked()) {
                offsets.add(p * PAGE_SIZE);
            }
            return offsets;
        } finally {
            lock.unlock();
        }
    }

    /**
     * {@return true when the page at {@code offset} is poisoned}
     *
     * @throws GuestMemoryException {@code EINVAL} for an offset outside the file; {@code EBADF} when closed
     */
    public boolean isPoisoned(long offset) {
        String op = "isPoisoned(offset=" + offset + ")";
        if (offset < 0 || offset >= size) {
            throw new GuestMemoryException(Errno.EINVAL, op, "offset is outside the " + size + "-byte file", -1);
        }
        lock.lock();
        try {
            ensureOpen(op);
            return poisoned.isMarked(page(offset));
        } finally {
            lock.unlock();
        }
    }

    /**
     * {@return the offset of the first poisoned page of {@code [offset, offset + length)}, a
     * range inside the file, or -1} One read while no page is poisoned.
     */
    long firstPoisoned(long offset, long length) {
        if (!poisoned.any()) {
            return -1;
        }
        lock.lock();
        try {
            long bad = poisoned.first(page(offset), page(offset + length + PAGE_SIZE - 1));
            return bad < 0 ? -1 : bad * PAGE_SIZE;
        } finally {
            lock.unlock();
        }
    }

    /** Refuses a range, inside the file, that covers a poisoned page; under the lock. */
    void checkNotPoisoned(String op, long offset, long length) {
        long bad = poisoned.first(page(offset), page(offset + length + PAGE_SIZE - 1));
        if (bad >= 0) {
            throw poisonedAt(op, bad);
        }
    }

    private static GuestMemoryException poisonedAt(String op, long page) {
        return new GuestMemoryException(Errno.EHWPOISON, op, "the page at offset " + page * PAGE_SIZE
                + " is poisoned (a memory failure); punch it to use it again", page * PAGE_SIZE);
    }

    /** Clears the poison of pages {@code [first, end)}, punched; the host's mapping of the shared ones comes back. */
    private void clearPoison(long first, long end) {
        for (long[] run : poisoned.clear(first, end)) {
            attributes.forEachRun(run[0], run[1], false, (from, to) -> {
                hostView.restore(from * PAGE_SIZE, (to - from) * PAGE_SIZE);
            });
        }
    }

    // ---------------------------------------------------------------- state

    /**
     * {@return the attribute of the page at {@code offset}}
     *
     * @throws GuestMemoryException {@code EINVAL} for an offset outside the file; {@code EBADF} when closed
     */
    public Attribute attribute(long offset) {
        String op = "attribute(offset=" + offset + ")";
        if (offset < 0 || offset >= size) {
            throw new GuestMemoryException(Errno.EINVAL, op, "offset is outside the " + size + "-byte file", -1);
        }
        lock.lock();
        try {
            ensureOpen(op);
            return attributes.isSet(page(offset)) ? Attribute.PRIVATE : Attribute.SHARED;
        } finally {
            lock.unlock();
        }
    }

    int hostReferences(long offset, long length) {
        lock.lock();
        try {
            int n = 0;
            for (Lease l : leases) {
                n += overlaps(l.fileOffset(), l.length(), offset, length) ? 1 : 0;
            }
            for (Pin p : pins) {
                n += overlaps(p.offset(), p.length(), offset, length) ? 1 : 0;
            }
            return n;
        } finally {
            lock.unlock();
        }
    }

    /** {@return true when every page of the range is private} */
    boolean allPrivate(long offset, long length) {
        return attributes.firstClear(page(offset), page(offset + length)) < 0;
    }

    /**
     * {@return the file as runs of pages in the same state, in offset order} Whether a page is
     * allocated is asked of the kernel ({@code mincore}), so it includes pages a guest touched.
     *
     * <p>The attributes are those of one instant during the call; the kernel is asked for
     * residency after that, without the file's lock, because that takes time in proportion to
     * the file's size (seconds for a TiB) and conversions must not wait for it. A page
     * allocated or freed concurrently may show either way.
     *
     * @throws GuestMemoryException {@code EBADF} when closed, also when closed during the call
     */
    public List<PageRun> pageRuns() {
        fetchFirst("pageRuns()", 0, size);  // residency is read from the file: every page must be in it
        return pageRuns(true);
    }

    /**
     * {@return the runs as {@link #pageRuns()}, or, without {@code scanResidency}, with only
     * the pages the library allocated counted as allocated} The cheap form is for a caller
     * that knows from the kernel that no page is allocated (a lazy restore's empty target).
     */
    List<PageRun> pageRuns(boolean scanResidency) {
        String op = "pageRuns()";
        RunMap privates = new RunMap(false);
        RunMap allocated = new RunMap(false);
        lock.lock();
        try {
            ensureOpen(op);
            // Proportional to the runs, not the pages: cheap under the lock.
            attributes.forEachRun(0, pages, true, (from, to) -> privates.set(from, to, true));
            fallocated.forEachRun(0, pages, true, (from, to) -> allocated.set(from, to, true));
            users++;
        } finally {
            lock.unlock();
        }
        try {
            Runnable hook = beforeResidencyScan;
            if (hook != null) {
                hook.run();
            }
            for (long chunk = 0; scanResidency && chunk < size; chunk += RESIDENCY_SCAN_BYTES) {
                ensureOpen(op);  // close() waits for this scan: leave at once
                BackingFile.forEachResidentRun(file, chunk, Math.min(RESIDENCY_SCAN_BYTES, size - chunk),
                        (o, l) -> allocated.set(page(o), page(o + l), true));
            }
        } finally {
            lock.lock();
            try {
                users--;
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
        // Cut the file where either bit flips.
        List<Long> cuts = new ArrayList<>();
        privates.forEachFlip(1, pages, p -> cuts.add(p * PAGE_SIZE));
        allocated.forEachFlip(1, pages, p -> cuts.add(p * PAGE_SIZE));
        cuts.add(size);
        cuts.sort(null);
        List<PageRun> runs = new ArrayList<>();
        long start = 0;
        for (long cut : cuts) {
            if (cut <= start) {
                continue;
            }
            boolean isAllocated = allocated.isSet(page(start));
            Attribute attribute = privates.isSet(page(start)) ? Attribute.PRIVATE : Attribute.SHARED;
            PageRun last = runs.isEmpty() ? null : runs.getLast();
            if (last != null && last.attribute() == attribute && last.allocated() == isAllocated) {
                runs.set(runs.size() - 1, new PageRun(last.offset(), cut - last.offset(), attribute, isAllocated));
            } else {
                runs.add(new PageRun(start, cut - start, attribute, isAllocated));
            }
            start = cut;
        }
        return runs;
    }

    /** How much of the file one step of the residency scan covers: a close waits for one step at most. */
    private static final long RESIDENCY_SCAN_BYTES = 1L << 30;

    /**
     * {@return how many pages are shared, private and allocated} As {@link #pageRuns()}, the
     * file's lock is not held while the kernel is asked for residency.
     *
     * @throws GuestMemoryException {@code EBADF} when closed
     */
    public PageCounts pageCounts() {
        long shared = 0;
        long privates = 0;
        long allocated = 0;
        for (PageRun run : pageRuns()) {
            long n = run.length() / PAGE_SIZE;
            if (run.attribute() == Attribute.SHARED) {
                shared += n;
            } else {
                privates += n;
            }
            if (run.allocated()) {
                allocated += n;
            }
        }
        return new PageCounts(pages, shared, privates, allocated);
    }

    /** {@return the heap bytes used to track page state: it grows with conversions, not with size} */
    public long metadataBytes() {
        lock.lock();
        try {
            return attributes.bytesUsed() + fallocated.bytesUsed() + unrestored.bytesUsed() + poisoned.bytesUsed()
                    + hostView.bytesUsed();
        } finally {
            lock.unlock();
        }
    }

    /** {@return the number of conversions that changed at least one page} */
    public long conversions() {
        lock.lock();
        try {
            return conversions;
        } finally {
            lock.unlock();
        }
    }

    /**
     * {@return the file descriptor of the backing, for owners that hand it to the kernel}
     *
     * @throws GuestMemoryException {@code EBADF} when closed: the number may name another file by now
     */
    public int fd() {
        ensureOpen("fd()");
        return file.fd();
    }

    /** {@return true once closed} */
    public boolean isClosed() {
        lock.lock();
        try {
            return closed;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Closes the file: revokes every lease and pin, releases every binding, ends every
     * operation in progress (those waiting fail with {@code EBADF}), and only then closes the
     * file descriptor and frees the memory. Idempotent. An owner that throws from
     * {@link Owner#release} does not keep the file open: the others are released, the file
     * is closed, then the first such exception is thrown.
     *
     * @throws GuestMemoryException {@code EDEADLK} when called from an owner callback while the
     *                              file is open: the operation that called the owner still uses
     *                              the file and cannot end until the callback returns, so the
     *                              close would have to wait for itself; nothing changes
     */
    @Override
    public void close() {
        LazyRestore restore = lazyRestore;
        if (restore != null && !closed) {
            restore.close();  // its threads stop before the mapping they fill goes away
        }
        RuntimeException ownerFailure = null;
        lock.lock();
        try {
            if (closed) {
                return;
            }
            if (lock.getHoldCount() > 1) {
                throw new GuestMemoryException(Errno.EDEADLK, "close()", "called from an owner callback: the operation "
                        + "that called the owner still uses the file; close after it returns", -1);
            }
            closed = true;
            for (Lease lease : leases) {
                endLease(lease);
            }
            leases.clear();
            for (Pin pin : pins) {
                endPin(pin);
            }
            pins.clear();
            for (Binding b : List.copyOf(bindings)) {
                bindings.remove(b);
                b.end();
                try {
                    b.owner().release(b);
                } catch (RuntimeException e) {
                    if (ownerFailure == null) {
                        ownerFailure = e;
                    } else {
                        ownerFailure.addSuppressed(e);
                    }
                }
            }
            changed.signalAll();  // waiters wake, see the file closed, and fail with EBADF
            while (users > 0) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
        // Scoped accesses in flight get their pin wait to end; the addresses stay reserved, as
        // anonymous pages, until they and every segment a native call holds are gone.
        gate.close();
        gate.awaitQuiet(0, pages, pinWait.toNanos());
        hostView.retire(gate);
        file.close();
        if (ownerFailure != null) {
            throw ownerFailure;
        }
    }

    // ---------------------------------------------------------------- change tracking

    /**
     * Opens a log of the pages the library and host code change from now on: allocations,
     * punches, conversions, populates, host writes, and every page under a live lease or pin.
     * A migration drains it each round, alongside KVM's dirty log for the guest's own writes.
     *
     * @throws GuestMemoryException {@code EBADF} when closed; {@code EFBIG} for a file of more
     *                              than 2^31 - 1 pages
     */
    public ChangeLog trackChanges() {
        ensureOpen("trackChanges()");  // EBADF first, as for every call on a closed fd
        if (pages > Integer.MAX_VALUE) {
            // Checked here, not when a change is marked: a mark must never fail half-way through a conversion.
            throw new GuestMemoryException(Errno.EFBIG, "trackChanges()", "a change log indexes pages with an int: files up to "
                    + Integer.MAX_VALUE + " pages (8 TiB)", -1);
        }
        lock.lock();
        try {
            ensureOpen("trackChanges()");
            ChangeLog log = new ChangeLog(this);
            changeLogs.add(log);
            return log;
        } finally {
            lock.unlock();
        }
    }

    java.util.BitSet drain(ChangeLog log) {
        lock.lock();
        try {
            if (log.isClosed()) {
                throw new GuestMemoryException(Errno.EBADF, "drain()", "the change log is closed", -1);
            }
            // Host code may write under a lease or pin at any moment without asking.
            for (Lease l : leases) {
                log.mark(page(l.fileOffset()), page(l.fileOffset() + l.length() + PAGE_SIZE - 1));
            }
            for (Pin p : pins) {
                log.mark(page(p.offset()), page(p.offset() + p.length() + PAGE_SIZE - 1));
            }
            // A segment a native call held when it was revoked reaches the file again once its pages are shared.
            hostView.forEachHeld((o, l) -> log.mark(page(o), page(o + l + PAGE_SIZE - 1)));
            return log.take();
        } finally {
            lock.unlock();
        }
    }

    void untrack(ChangeLog log) {
        lock.lock();
        try {
            changeLogs.remove(log);
        } finally {
            lock.unlock();
        }
    }

    /** Records a change of {@code [offset, offset + length)} in every open log; under the lock. */
    void changed(long offset, long length) {
        for (ChangeLog log : changeLogs) {
            log.mark(page(offset), page(offset + length + PAGE_SIZE - 1));
        }
    }

    /**
     * Copies {@code from} (an owner's view of the pages at {@code fileOffset}) into {@code to}
     * if every page of the range is shared now, under the lock so that no conversion can slip
     * in between the check and the copy.
     *
     * @return false, having copied nothing, when a page of the range is private or poisoned
     */
    boolean copyIfShared(MemorySegment from, long fileOffset, MemorySegment to) {
        lock.lock();
        try {
            ensureOpen("copyIfShared");
            waitWhileBusy("copyIfShared", fileOffset, to.byteSize());
            long endPage = page(fileOffset + to.byteSize() + PAGE_SIZE - 1);
            if (attributes.firstSet(page(fileOffset), endPage) >= 0
                    || poisoned.first(page(fileOffset), endPage) >= 0) {
                return false;
            }
            to.copyFrom(from.asSlice(0, to.byteSize()));
            return true;
        } finally {
            lock.unlock();
        }
    }

    // ---------------------------------------------------------------- helpers

    private void ensureOpen(String op) {
        if (closed) {
            throw new GuestMemoryException(Errno.EBADF, op, "the file is closed", -1);
        }
    }

    /**
     * Waits until no conversion is in progress over the range (conversions wait for any).
     *
     * @throws GuestMemoryException {@code EDEADLK} when the conversion in progress is this
     *                              thread's own (an owner callback called back), which would
     *                              never end; {@code EBADF} when the file closed meanwhile
     */
    private void waitWhileBusy(String op, long offset, long length) {
        while (busyStart >= 0 && overlaps(busyStart, busyEnd - busyStart, offset, length)) {
            if (busyThread == Thread.currentThread()) {
                throw new GuestMemoryException(Errno.EDEADLK, op, "called from an owner callback of the conversion of ["
                        + busyStart + ", " + busyEnd + "), which cannot end until the callback returns", busyStart);
            }
            changed.awaitUninterruptibly();
        }
        ensureOpen(op);
    }

    private void checkRange(String op, long offset, long length) {
        if (offset < 0 || length <= 0 || offset % PAGE_SIZE != 0 || length % PAGE_SIZE != 0) {
            throw new GuestMemoryException(Errno.EINVAL, op, "offset and length must be page aligned, length positive", -1);
        }
        if (offset > size || length > size - offset) {
            throw new GuestMemoryException(Errno.EINVAL, op, "range ends past the " + size + "-byte file", -1);
        }
    }

    static boolean overlaps(long aOffset, long aLength, long bOffset, long bLength) {
        return aOffset < bOffset + bLength && bOffset < aOffset + aLength;
    }

    private static long page(long offset) {
        return offset / PAGE_SIZE;
    }

    /** {@return {@code bytes} rounded up to whole pages; {@code bytes <= Long.MAX_VALUE - PAGE_SIZE + 1}} */
    private static long roundUp(long bytes) {
        return (bytes + PAGE_SIZE - 1) / PAGE_SIZE * PAGE_SIZE;
    }

    MemorySegment pages() {
        return file.pages();
    }
}
