/**
 * Moving guest memory between processes and hosts. {@link dev.guestmemfd.migration.MemoryMigration}
 * moves a guest memory file with its owner's state where there is no KVM, in the snapshot
 * stream format, with pre-copy rounds while a {@link dev.guestmemfd.migration.GuestActivity}
 * keeps writing; owners that want their own state carried implement
 * {@link dev.guestmemfd.migration.CarriedState}. {@link dev.guestmemfd.migration.PageWorkload}
 * is a workload for trying it: it writes shared and private pages and checks them at the
 * destination. The migration runs over any pair of streams that holds a session key;
 * {@link dev.guestmemfd.migration.X25519Agreement} makes one for loopback only.
 */
package dev.guestmemfd.migration;
