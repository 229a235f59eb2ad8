/**
 * Executable models of the page-ownership rules of the confidential-computing architectures
 * that guest_memfd serves, each plugged into the library as an owner: SEV-SNP, TDX, pKVM,
 * Arm CCA and Gunyah. They are models, not drivers: no such hardware is needed or touched.
 */
module dev.guestmemfd.models {
    requires transitive dev.guestmemfd;

    exports dev.guestmemfd.models;
}
