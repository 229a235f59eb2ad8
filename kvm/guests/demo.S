# demo: the story `gmem demo` tells. The guest keeps a secret in a private page, writes a
# message into a shared buffer for the host, lets the host try both, then gives the
# secret page back zeroed and frees the buffer. RBX = the vCPU's region.
    .code64
    .globl _start
    .set    SERIAL, 0x3f8
    .set    DOORBELL, 0x510
    .set    RESULT, 0x511
    .set    FAIL, 0x512
    .set    CMD_CONVERT, 1
    .set    CMD_PUNCH, 2
    .set    CMD_HOST_DENIED, 4
    .set    CMD_HOST_READ, 6
    .set    PAGE, 4096
    .set    BUFFER, 0x10000             # the shared buffer, from the region's start

_start:
    lea     say_secret(%rip), %rsi
    call    print
    mov     $1, %r11
    mov     $CMD_CONVERT, %r10          # the secret's page becomes private, zeroed
    mov     %rbx, %rdi
    mov     $PAGE, %rsi
    mov     $1, %r8
    xor     %r9, %r9
    call    doorbell
    lea     secret(%rip), %rsi          # copy the secret in
    mov     %rbx, %rdi
    mov     $(secret_end - secret), %rcx
    rep movsb

    lea     say_message(%rip), %rsi
    call    print
    lea     message(%rip), %rsi         # copy the message into the shared buffer
    lea     BUFFER(%rbx), %rdi
    mov     $(message_end - message), %rcx
    rep movsb
    mov     $2, %r11
    mov     $CMD_HOST_READ, %r10        # the host reads it through its mapping
    lea     BUFFER(%rbx), %rdi
    mov     $(message_end - message), %rsi
    call    doorbell
    mov     $3, %r11
    mov     $CMD_HOST_DENIED, %r10      # the host tries the secret: it must be refused
    mov     %rbx, %rdi
    mov     $PAGE, %rsi
    call    doorbell

    lea     say_done(%rip), %rsi
    call    print
    mov     $4, %r11
    mov     $CMD_CONVERT, %r10          # the secret's page goes back shared, zeroed
    mov     %rbx, %rdi
    mov     $PAGE, %rsi
    xor     %r8, %r8
    xor     %r9, %r9
    call    doorbell
    mov     $5, %r11
    mov     $CMD_PUNCH, %r10            # and the buffer is freed
    lea     BUFFER(%rbx), %rdi
    mov     $PAGE, %rsi
    call    doorbell
    lea     say_bye(%rip), %rsi
    call    print
    mov     $RESULT, %dx
    xor     %eax, %eax
    out     %eax, (%dx)
1:  hlt
    jmp     1b

# Prints the zero-terminated string at RSI on the serial port.
print:
    mov     $SERIAL, %dx
1:  lodsb
    test    %al, %al
    jz      2f
    out     %al, (%dx)
    jmp     1b
2:  ret

doorbell:
    mov     $DOORBELL, %dx
    in      (%dx), %eax
    test    %eax, %eax
    jnz     fail
    ret

fail:
    mov     %r11, %rax
    mov     $FAIL, %dx
    out     %eax, (%dx)
1:  hlt
    jmp     1b

say_secret:  .asciz "guest: keeping a secret in a private page\n"
say_message: .asciz "guest: writing a message into a shared buffer for the host\n"
say_done:    .asciz "guest: giving the secret's page back, zeroed, and freeing the buffer\n"
say_bye:     .asciz "guest: bye\n"
secret:      .ascii "launch key 5ec2e7-c0ffee"
secret_end:
message:     .ascii "Hello, host! This buffer is shared; my secret is not."
message_end:
