/* The XTFPGA board's hand-written lx106 code (rustc refuses `asm!` for this target).
   cargo-tcpflash assembles this file into every `--board qemu` firmware
   (`ota_agent::boards::xtfpga::ASM`). */

/* u32 tcpflash_xtfpga_ccount(void): the CPU cycle counter, which only `rsr` reads. */
    .section .text.tcpflash_xtfpga_ccount, "ax"
    .global tcpflash_xtfpga_ccount
    .type tcpflash_xtfpga_ccount, @function
    .p2align 2
tcpflash_xtfpga_ccount:
    rsr a2, ccount
    ret
    .size tcpflash_xtfpga_ccount, . - tcpflash_xtfpga_ccount

    .section .note.GNU-stack, "", @progbits
