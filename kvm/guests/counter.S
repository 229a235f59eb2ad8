# counter: counts for ever and reports each count with one `out` to port 0x513, which the
# host prints as "tick XXXXXXXX" (one exit per tick: exits are what costs in a nested VM).
# The count lives in memory only, at [RBX], read and written back every tick: a guest moved
# to another host carries on from the next number only if its memory moved with it, the
# pages it wrote while a pre-copy migration was sending them included.
    .code64
    .globl _start
    .set    TICK, 0x513
    .set    PAUSE, 10000                # about 10 ms on the nested test host
_start:
next:
    mov     (%rbx), %rax                # 0 in fresh memory
    inc     %rax
    mov     %rax, (%rbx)
    mov     $TICK, %dx
    out     %eax, (%dx)
    mov     $PAUSE, %rcx
1:  dec     %rcx
    jnz     1b
    jmp     next
