/*
 * kernel_bench: the same work as guestmemfd's benchmarks, as plain system calls, so that
 * `gmem bench` can put the library side by side with the kernel in one run.
 *
 *   kernel_bench memfd|gmem allocate|punch|populate|touch BYTES   -> prints "ns=N"
 *   kernel_bench gmem guest BYTES GUEST_BIN                        -> prints "ns=N sum=S"
 *
 * Each call creates its file, does the timed operation once, and exits. "gmem" is the
 * kernel's guest_memfd (KVM_CREATE_GUEST_MEMFD with MMAP | INIT_SHARED). "guest" runs the
 * touch-all guest over BYTES of a guest_memfd memslot, set up as the library sets it up
 * (identity-mapped 2 MiB pages, code at 0x10000, 64-bit mode from the first instruction),
 * and times KVM_RUN until the guest reports on port 0x511.
 *
 * Built by `gmem bench` with the machine's gcc; the headers of Debian 12 predate
 * guest_memfd, so the few definitions it needs are written out below.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef KVM_CREATE_GUEST_MEMFD
struct kvm_create_guest_memfd { uint64_t size; uint64_t flags; uint64_t reserved[6]; };
#define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
#endif
#ifndef KVM_SET_USER_MEMORY_REGION2
struct kvm_userspace_memory_region2 {
    uint32_t slot; uint32_t flags; uint64_t guest_phys_addr; uint64_t memory_size;
    uint64_t userspace_addr; uint64_t guest_memfd_offset; uint32_t guest_memfd; uint32_t pad1;
    uint64_t pad2[14];
};
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#endif
#define GMEM_FLAG_MMAP (1ULL << 0)
#define GMEM_FLAG_INIT_SHARED (1ULL << 1)
#define MEM_GUEST_MEMFD (1U << 2)
#define PAGE 4096UL

static void die(const char *what) {
    fprintf(stderr, "kernel_bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t) t.tv_sec * 1000000000ULL + (uint64_t) t.tv_nsec;
}

static int vm_fd = -1;

static int create_file(const char *kind, uint64_t bytes) {
    if (strcmp(kind, "memfd") == 0) {
        int fd = memfd_create("kernel_bench", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t) bytes) < 0) die("memfd");
        return fd;
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("open /dev/kvm");
    vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm_fd < 0) die("KVM_CREATE_VM");
    struct kvm_create_guest_memfd args = { .size = bytes, .flags = GMEM_FLAG_MMAP | GMEM_FLAG_INIT_SHARED };
    int fd = ioctl(vm_fd, KVM_CREATE_GUEST_MEMFD, &args);
    if (fd < 0) die("KVM_CREATE_GUEST_MEMFD");
    close(kvm);
    return fd;
}

static int guest(int fd, uint64_t bytes, const char *bin) {
    uint8_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) die("mmap");
    uint64_t *pml4 = (uint64_t *) (mem + 0x1000), *pdpt = (uint64_t *) (mem + 0x2000), *pd = (uint64_t *) (mem + 0x3000);
    pml4[0] = 0x2000 | 3;
    pdpt[0] = 0x3000 | 3;
    for (uint64_t i = 0; i < 512; i++) pd[i] = (i << 21) | 0x83;
    FILE *f = fopen(bin, "rb");
    if (!f) die("guest binary");
    size_t n = fread(mem + 0x10000, 1, 0x10000, f);
    fclose(f);
    if (n == 0) die("empty guest binary");
    struct kvm_userspace_memory_region2 region = {
        .slot = 0, .flags = MEM_GUEST_MEMFD, .guest_phys_addr = 0, .memory_size = bytes,
        .userspace_addr = (uint64_t) mem, .guest_memfd_offset = 0, .guest_memfd = (uint32_t) fd };
    if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION2, &region) < 0) die("KVM_SET_USER_MEMORY_REGION2");
    ioctl(vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    int vcpu = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    struct kvm_run *run = mmap(NULL, (size_t) run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");
    struct kvm_sregs s;
    if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
    struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1,
                                .s = 1, .l = 1, .g = 1 };
    struct kvm_segment data = { .base = 0, .limit = 0xffffffff, .selector = 16, .type = 3, .present = 1,
                                .db = 1, .s = 1, .g = 1 };
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.cr0 = 0x80050033;
    s.cr3 = 0x1000;
    s.cr4 = 1 << 5;
    s.efer = (1 << 8) | (1 << 10);
    if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");
    struct kvm_regs r = { .rip = 0x10000, .rsp = 0x80000, .rbx = 0x400000, .rcx = bytes, .rflags = 2 };
    if (ioctl(vcpu, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");
    uint64_t start = now_ns();
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x511) break;
        if (run->exit_reason != KVM_EXIT_IO) {
            fprintf(stderr, "kernel_bench: unexpected exit %u\n", run->exit_reason);
            return 1;
        }
    }
    uint64_t end = now_ns();
    if (ioctl(vcpu, KVM_GET_REGS, &r) < 0) die("KVM_GET_REGS");
    printf("ns=%llu sum=%llu\n", (unsigned long long) (end - start), (unsigned long long) r.rax);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: kernel_bench memfd|gmem allocate|punch|populate|touch|guest BYTES [GUEST_BIN]\n");
        return 2;
    }
    uint64_t bytes = strtoull(argv[3], NULL, 0);
    int fd = create_file(argv[1], bytes);
    const char *op = argv[2];
    if (strcmp(op, "guest") == 0) return guest(fd, bytes, argv[4]);
    uint64_t start, end;
    if (strcmp(op, "allocate") == 0) {
        start = now_ns();
        if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t) bytes) < 0) die("fallocate");
        end = now_ns();
    } else if (strcmp(op, "punch") == 0) {
        if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t) bytes) < 0) die("fallocate");
        start = now_ns();
        if (fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, (off_t) bytes) < 0) die("punch");
        end = now_ns();
    } else {
        uint8_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (mem == MAP_FAILED) die("mmap");
        start = now_ns();
        if (strcmp(op, "populate") == 0) {
            if (madvise(mem, bytes, MADV_POPULATE_WRITE) < 0) die("madvise");
        } else {
            for (uint64_t o = 0; o < bytes; o += PAGE) ((volatile uint8_t *) mem)[o] = 1;
        }
        end = now_ns();
    }
    printf("ns=%llu\n", (unsigned long long) (end - start));
    return 0;
}
