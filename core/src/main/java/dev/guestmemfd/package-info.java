/**
 * The memory of a confidential virtual machine as a file: {@link dev.guestmemfd.GuestMemory}
 * is a fixed-size, memory-only file whose pages are allocated on demand, zeroed before first
 * use, freed by punching holes, and each either <em>shared</em> (the host may map and read
 * it) or <em>private</em> (only the guest and its owner may).
 *
 * <p>The host reaches shared pages through a {@link dev.guestmemfd.HostMapping}, with
 * revocable {@link dev.guestmemfd.Lease}s and short {@link dev.guestmemfd.Pin}s; a hypervisor
 * plugs in as an {@link dev.guestmemfd.Owner} and reaches every page through its
 * {@link dev.guestmemfd.Binding}. Converting pages to private takes every host reference back
 * first, whole or not at all. A file's pages come from a {@link dev.guestmemfd.Backing}: ask
 * {@link dev.guestmemfd.Backing#available()} which ones this host offers. Every refusal is a
 * {@link dev.guestmemfd.GuestMemoryException} whose {@link dev.guestmemfd.Errno} is the one
 * the kernel's guest_memfd gives for the same input, and changes nothing.
 *
 * <p>A file, a message from the host, and a page the host loses when it turns private:
 * {@snippet class=dev.guestmemfd.GuestMemoryExampleTest region=example}
 *
 * <p>The library calls Linux through {@code java.lang.foreign}: run it with
 * {@code --enable-native-access=dev.guestmemfd.linux} (or {@code ALL-UNNAMED} on the class
 * path). Without the flag the JDK prints a warning; under {@code --illegal-native-access=deny}
 * the first call throws an {@link java.lang.IllegalCallerException} that names the flag.
 */
package dev.guestmemfd;
