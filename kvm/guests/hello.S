# hello: prints a line over the serial port 0x3f8, then halts.
# Entered in 64-bit long mode at 0x10000 with identity-mapped page tables (see
# GuestLayout.java); needs no stack.
    .code64
    .globl _start
_start:
    lea     message(%rip), %rsi
    mov     $0x3f8, %dx
1:  lodsb
    test    %al, %al
    jz      2f
    out     %al, (%dx)
    jmp     1b
2:  hlt
    jmp     2b

message:
    .asciz  "Hello from a guest whose memory is a guestmemfd file.\n"
