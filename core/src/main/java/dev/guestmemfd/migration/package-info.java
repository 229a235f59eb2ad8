/**
 * Moving guest memory between processes and hosts, with or without KVM.
 *
 * <p>The channel: migration between hosts runs over a mutually authenticated channel, TLS 1.3
 * from the JDK, each end holding an {@link dev.guestmemfd.migration.Identity} and pinning the
 * certificate of the other ({@link dev.guestmemfd.migration.TrustedPeer}). The source
 * {@linkplain dev.guestmemfd.migration.MigrationChannel#connect connects}; the destination
 * {@linkplain dev.guestmemfd.migration.MigrationListener listens}; both get the same
 * {@linkplain dev.guestmemfd.migration.MigrationChannel#sealingKey() sealing key}, bound to
 * their session, for the private pages they send.
 *
 * <p>What moves: {@link dev.guestmemfd.migration.MemoryMigration} moves a guest memory file with
 * its owner's state where there is no KVM, in the snapshot stream format, with pre-copy rounds
 * while a {@link dev.guestmemfd.migration.GuestActivity} keeps writing; owners that want their
 * own state carried implement {@link dev.guestmemfd.migration.CarriedState}.
 * {@link dev.guestmemfd.migration.PageWorkload} is a workload for trying it: it writes shared and
 * private pages and checks them at the destination. The migration runs over any pair of streams
 * that holds a session key; {@link dev.guestmemfd.migration.X25519Agreement} makes one without
 * authentication, for loopback only.
 */
package dev.guestmemfd.migration;
