/**
 * Thin {@code java.lang.foreign} bindings to the Linux calls that guestmemfd needs: one
 * class per family of system calls, errno captured with each call, and one exception
 * type, {@link dev.guestmemfd.linux.LinuxException}, for every failure.
 *
 * <p>This is not public API: it is exported only to the layers above it.
 */
module dev.guestmemfd.linux {
    exports dev.guestmemfd.linux to dev.guestmemfd, dev.guestmemfd.kvm, dev.guestmemfd.cli;
}
