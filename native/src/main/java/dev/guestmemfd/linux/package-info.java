/**
 * Thin {@code java.lang.foreign} bindings to the Linux calls that guestmemfd needs: one class
 * per family of calls ({@link dev.guestmemfd.linux.Fd}, {@link dev.guestmemfd.linux.Mman},
 * {@link dev.guestmemfd.linux.Memfd}, {@link dev.guestmemfd.linux.Ioctl}, ...), errno captured
 * with each call, and every failure a {@link dev.guestmemfd.linux.LinuxException}.
 *
 * <p>Not public API: the module exports this package only to the library's own modules,
 * which turn its failures into their own exceptions. It is the one module that needs
 * {@code --enable-native-access}.
 */
package dev.guestmemfd.linux;
