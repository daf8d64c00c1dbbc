/* Byte-at-a-time memcpy, memset and memcmp for tcpflash-boot. compiler_builtins' versions
   (weak symbols, replaced by these) move words and take 450 bytes of the 4 KB sector; here
   they only move small structs on the stack and in DRAM, where byte access works (never
   IRAM, which takes 32-bit accesses only). Assembled by cargo-tcpflash
   ([package.metadata.tcpflash] asm); call0 ABI: arguments in a2..a4, result in a2. */

/* void *memcpy(void *dest, const void *src, size_t n) */
    .section .text.tcpflash_boot_memcpy, "ax"
    .global memcpy
    .type memcpy, @function
    .p2align 2
memcpy:
    mov a5, a2
1:  beqz a4, 2f
    l8ui a6, a3, 0
    s8i a6, a5, 0
    addi a3, a3, 1
    addi a5, a5, 1
    addi a4, a4, -1
    j 1b
2:  ret
    .size memcpy, . - memcpy

/* void *memset(void *dest, int c, size_t n) */
    .section .text.tcpflash_boot_memset, "ax"
    .global memset
    .type memset, @function
    .p2align 2
memset:
    mov a5, a2
1:  beqz a4, 2f
    s8i a3, a5, 0
    addi a5, a5, 1
    addi a4, a4, -1
    j 1b
2:  ret
    .size memset, . - memset

/* int memcmp(const void *a, const void *b, size_t n): the first differing bytes'
   difference, 0 when equal. bcmp only needs zero or not, so it is the same routine. */
    .section .text.tcpflash_boot_memcmp, "ax"
    .global memcmp
    .type memcmp, @function
    .global bcmp
    .type bcmp, @function
    .p2align 2
memcmp:
bcmp:
1:  beqz a4, 2f
    l8ui a5, a2, 0
    l8ui a6, a3, 0
    addi a2, a2, 1
    addi a3, a3, 1
    addi a4, a4, -1
    beq a5, a6, 1b
    sub a2, a5, a6
    ret
2:  movi a2, 0
    ret
    .size memcmp, . - memcmp

    .section .note.GNU-stack, "", @progbits
