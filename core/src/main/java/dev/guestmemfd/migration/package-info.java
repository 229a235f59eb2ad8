/**
 * Migration between hosts over a mutually authenticated channel: TLS 1.3 from the JDK, each
 * end holding an {@link dev.guestmemfd.migration.Identity} and pinning the certificate of the
 * other ({@link dev.guestmemfd.migration.TrustedPeer}). The source
 * {@linkplain dev.guestmemfd.migration.MigrationChannel#connect connects}; the destination
 * {@linkplain dev.guestmemfd.migration.MigrationListener listens}; both get the same
 * {@linkplain dev.guestmemfd.migration.MigrationChannel#sealingKey() sealing key}, bound to
 * their session, for the private pages they send. Needs no KVM.
 */
package dev.guestmemfd.migration;
