# conversions: after the kernel's x86/private_mem_conversions_test, for one vCPU whose
# region starts at guest-physical RBX. For each range (offset, size) below:
#   1. shared: the guest fills it with 0xAA; the host must read 0xAA through its mapping
#   2. converts it to private (content ZERO): the guest reads zeros, writes 0xBB; the host
#      must be refused on every page
#   3. converts the odd pages back to shared; the host writes 0xCC there; the guest sees
#      0xCC on odd pages and still 0xBB on even ones; the host reads 0xCC and is refused
#      on the even ones
#   4. converts it all to shared (ZERO); the guest writes 0xDD; the host reads 0xDD
#   5. punches it; the guest reads zeros
# Requests go to the host through the doorbell: `in` from port 0x510 with the command in
# R10 and arguments in RDI, RSI, R8, R9; EAX comes back 0 on success (see
# docs/GUEST-PROTOCOL.md). Success ends with `out` 0 to port 0x511, failure with
# `out` (range << 8 | step) to port 0x512.
    .code64
    .globl _start
    .set    DOORBELL, 0x510
    .set    RESULT, 0x511
    .set    FAIL, 0x512
    .set    CMD_CONVERT, 1          # rdi=gpa rsi=bytes r8=1 private/0 shared r9=1 preserve/0 zero
    .set    CMD_PUNCH, 2            # rdi=gpa rsi=bytes
    .set    CMD_HOST_CHECK, 3       # rdi=gpa rsi=bytes r8=byte: the host reads it through its mapping
    .set    CMD_HOST_DENIED, 4      # rdi=gpa rsi=bytes: the host must be refused on every page
    .set    CMD_HOST_WRITE, 5       # rdi=gpa rsi=bytes r8=byte: the host writes it through its mapping
    .set    PAGE, 4096

_start:
    xor     %r15, %r15                  # range index
next_range:
    lea     ranges(%rip), %rax
    mov     %r15, %rcx
    shl     $4, %rcx
    mov     (%rax,%rcx), %r12           # offset
    mov     8(%rax,%rcx), %r13          # size
    test    %r13, %r13
    jz      done
    lea     (%rbx,%r12), %r14           # gpa of the range

    # 1. shared
    mov     $1, %r11
    mov     %r14, %rdi
    mov     %r13, %rcx
    mov     $0xAA, %al
    rep stosb
    mov     $CMD_HOST_CHECK, %r10
    mov     %r14, %rdi
    mov     %r13, %rsi
    mov     $0xAA, %r8
    call    doorbell

    # 2. private, zeroed
    mov     $2, %r11
    mov     $CMD_CONVERT, %r10
    mov     %r14, %rdi
    mov     %r13, %rsi
    mov     $1, %r8
    xor     %r9, %r9
    call    doorbell
    mov     $3, %r11
    mov     %r14, %rdi
    mov     %r13, %rcx
    xor     %al, %al
    call    check_bytes
    mov     %r14, %rdi
    mov     %r13, %rcx
    mov     $0xBB, %al
    rep stosb
    mov     $4, %r11
    mov     $CMD_HOST_DENIED, %r10
    mov     %r14, %rdi
    mov     %r13, %rsi
    call    doorbell

    # 3. odd pages shared again, written by the host
    mov     $PAGE, %rbp                 # offset of the page in the range
odd_pages:
    cmp     %r13, %rbp
    jae     odd_done
    mov     $5, %r11
    mov     $CMD_CONVERT, %r10
    lea     (%r14,%rbp), %rdi
    mov     $PAGE, %rsi
    xor     %r8, %r8
    xor     %r9, %r9
    call    doorbell
    mov     $6, %r11
    mov     $CMD_HOST_WRITE, %r10
    lea     (%r14,%rbp), %rdi
    mov     $PAGE, %rsi
    mov     $0xCC, %r8
    call    doorbell
    add     $(2 * PAGE), %rbp
    jmp     odd_pages
odd_done:
    xor     %rbp, %rbp
check_pages:
    cmp     %r13, %rbp
    jae     check_done
    lea     (%r14,%rbp), %rdi
    mov     $PAGE, %rcx
    mov     %rbp, %rax
    test    $PAGE, %rax                 # odd page?
    jnz     1f
    mov     $7, %r11                    # even: private, the guest's 0xBB, the host refused
    mov     $0xBB, %al
    call    check_bytes
    mov     $9, %r11
    mov     $CMD_HOST_DENIED, %r10
    lea     (%r14,%rbp), %rdi
    mov     $PAGE, %rsi
    call    doorbell
    jmp     2f
1:  mov     $8, %r11                    # odd: shared, the host's 0xCC on both sides
    mov     $0xCC, %al
    call    check_bytes
    mov     $CMD_HOST_CHECK, %r10
    lea     (%r14,%rbp), %rdi
    mov     $PAGE, %rsi
    mov     $0xCC, %r8
    call    doorbell
2:  add     $PAGE, %rbp
    jmp     check_pages
check_done:

    # 4. all shared, zeroed
    mov     $10, %r11
    mov     $CMD_CONVERT, %r10
    mov     %r14, %rdi
    mov     %r13, %rsi
    xor     %r8, %r8
    xor     %r9, %r9
    call    doorbell
    mov     %r14, %rdi
    mov     %r13, %rcx
    mov     $0xDD, %al
    rep stosb
    mov     $11, %r11
    mov     $CMD_HOST_CHECK, %r10
    mov     %r14, %rdi
    mov     %r13, %rsi
    mov     $0xDD, %r8
    call    doorbell

    # 5. punched: zeros in the guest
    mov     $12, %r11
    mov     $CMD_PUNCH, %r10
    mov     %r14, %rdi
    mov     %r13, %rsi
    call    doorbell
    mov     $13, %r11
    mov     %r14, %rdi
    mov     %r13, %rcx
    xor     %al, %al
    call    check_bytes

    inc     %r15
    jmp     next_range

done:
    mov     $RESULT, %dx
    xor     %eax, %eax
    out     %eax, (%dx)
1:  hlt
    jmp     1b

# Asks the host: command in R10; fails the test unless EAX comes back 0.
doorbell:
    mov     $DOORBELL, %dx
    in      (%dx), %eax
    test    %eax, %eax
    jnz     fail
    ret

# Fails unless RCX bytes from RDI all equal AL.
check_bytes:
    repe scasb
    jne     fail
    ret

# Reports (range << 8 | step) on the failure port and halts.
fail:
    mov     %r15, %rax
    shl     $8, %rax
    or      %r11, %rax
    mov     $FAIL, %dx
    out     %eax, (%dx)
1:  hlt
    jmp     1b

    .balign 16
# (offset, size) within the vCPU's region, as in the kernel's test; a zero size ends.
ranges:
    .quad   0,          0x1000
    .quad   0,          0x200000
    .quad   0x1000,     0x1000
    .quad   0x1000,     0x200000
    .quad   0x200000,   0x1000
    .quad   0,          0
