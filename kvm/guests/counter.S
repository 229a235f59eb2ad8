# counter: counts for ever and reports each count with one `out` to port 0x513, which the
# host prints as "tick XXXXXXXX" (one exit per tick: exits are what costs in a nested VM).
# The count lives in R12 and at [RBX], so a guest moved to another host (registers and
# memory) carries on from the next number.
    .code64
    .globl _start
    .set    TICK, 0x513
    .set    PAUSE, 10000                # about 10 ms on the nested test host
_start:
    mov     (%rbx), %r12                # 0 in fresh memory
next:
    inc     %r12
    mov     %r12, (%rbx)
    mov     %r12, %rax
    mov     $TICK, %dx
    out     %eax, (%dx)
    mov     $PAUSE, %rcx
1:  dec     %rcx
    jnz     1b
    jmp     next
