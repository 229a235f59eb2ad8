/**
 * Executable models of the page-ownership rules of SEV-SNP, TDX, pKVM, Arm CCA and Gunyah,
 * each an {@link dev.guestmemfd.Owner} of guest memory: bound to a file, a model follows
 * every conversion with the operations its architecture would perform (logged in
 * {@link dev.guestmemfd.models.ArchitectureModel#log()}), refuses what the architecture
 * refuses ({@code EPERM}, and nothing changes), and records what it could not have allowed
 * ({@link dev.guestmemfd.models.ArchitectureModel#violations()}). They are models, not
 * drivers: no such hardware is needed.
 *
 * <p>SEV-SNP taking a page private, and refusing to carry the host's bytes into one:
 * {@snippet class=dev.guestmemfd.models.ModelsExampleTest region=example}
 */
package dev.guestmemfd.models;
