# touch-all: writes every page of [RBX, RCX) once (the page's own guest-physical address
# into its first 8 bytes), then reads them all back and reports the sum on port 0x511.
# The host checks the sum: sum of the page addresses.
    .code64
    .globl _start
    .set    RESULT, 0x511
    .set    PAGE, 4096
_start:
    mov     %rbx, %rdi
1:  cmp     %rcx, %rdi
    jae     2f
    mov     %rdi, (%rdi)
    add     $PAGE, %rdi
    jmp     1b
2:  xor     %rax, %rax
    mov     %rbx, %rdi
3:  cmp     %rcx, %rdi
    jae     4f
    add     (%rdi), %rax
    add     $PAGE, %rdi
    jmp     3b
4:  mov     $RESULT, %dx
    out     %eax, (%dx)         # the host reads all of RAX with KVM_GET_REGS
5:  hlt
    jmp     5b
