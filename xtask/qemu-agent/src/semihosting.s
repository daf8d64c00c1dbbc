/* Hand-written lx106 code for the QEMU program: rustc refuses `asm!` for this target.
   Assembled by cargo-tcpflash's build ([package.metadata.tcpflash] asm) with GNU as. */

/* The firmware entry the start-up code calls. On a board the ROM has set the stack pointer
   before the bootloader jumps to us; QEMU's loader only sets the PC, so set a1 here: the
   top of DRAM, where the ROM keeps its stack too. Then run the program. */
    .section .text.main, "ax"
    .literal_position
    .literal .Lstack_top, 0x3ffffff0
    .literal .Lprogram, qemu_agent_main
    .global main
    .type main, @function
    .p2align 2
main:
    l32r a1, .Lstack_top
    l32r a0, .Lprogram
    callx0 a0
1:  j 1b
    .size main, . - main

/* The start-up code maps the firmware's flash megabyte through the ESP8266 ROM's cache
   routine before anything else; QEMU's sim machine has neither the ROM nor a flash cache
   (IROM is plain memory there) and no stack yet: nothing to do. */
    .section .text.tcpflash_map_flash, "ax"
    .global tcpflash_map_flash
    .type tcpflash_map_flash, @function
    .p2align 2
tcpflash_map_flash:
    ret
    .size tcpflash_map_flash, . - tcpflash_map_flash

/* i32 qemu_simcall(u32 call, u32 a, u32 b, u32 c): the call0 ABI puts the arguments in
   a2..a5, exactly where QEMU's semihosting wants the call number and its arguments, and
   takes the result from a2. */
    .section .text.qemu_simcall, "ax"
    .global qemu_simcall
    .type qemu_simcall, @function
    .p2align 2
qemu_simcall:
    simcall
    ret
    .size qemu_simcall, . - qemu_simcall

/* LLVM lowers a trap to `abort`. The start-up code's weak `abort` resets the board through
   the ROM, which QEMU does not have: exit with 134 (`scripted_push::exit_code::ABORT`) instead. */
    .section .text.abort, "ax"
    .global abort
    .type abort, @function
    .p2align 2
abort:
    movi a2, 1
    movi a3, 134
    simcall
2:  j 2b
    .size abort, . - abort

    .section .note.GNU-stack, "", @progbits
