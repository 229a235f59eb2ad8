# hypercall: asks for conversion the way SEV and TDX guests do, with the hypercall
# KVM_HC_MAP_GPA_RANGE (12): RBX = guest-physical address, RCX = pages, RDX = attributes
# (bit 4: encrypted, i.e. private). The host's answer (RAX) goes to port 0x511; then halts.
# The host sets RBX and RCX; the range is made private.
    .code64
    .globl _start
    .set    RESULT, 0x511
    .set    KVM_HC_MAP_GPA_RANGE, 12
    .set    ENCRYPTED, 1 << 4
_start:
    mov     $KVM_HC_MAP_GPA_RANGE, %eax
    mov     $ENCRYPTED, %edx
    vmcall
    mov     $RESULT, %dx
    out     %eax, (%dx)
1:  hlt
    jmp     1b
