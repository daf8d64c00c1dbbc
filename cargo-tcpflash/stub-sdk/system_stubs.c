/* Stub of the NONOS SDK's system library (libmain in the SDK-shaped tree the tests build):
 * the functions the agent and example-blinky call, declared from the SDK's documented API,
 * with bodies that only stand in. Nothing here runs; it makes the link real: sections,
 * symbols the SDK's linker scripts provide and the libraries read, the entry's callees. */
typedef unsigned char uint8;
typedef unsigned short uint16;
typedef unsigned int uint32;
typedef _Bool bool;

#define FLASH_CODE __attribute__((section(".irom0.text")))

/* What the real libraries read from the linker script and the application. */
extern char _bss_start, _bss_end, _data_start, _data_end, _rodata_start, _rodata_end;
extern char _heap_start, _irom0_text_start, _lit4_end;
extern const char *__ctype_ptr__;
extern void *memchr(const void *s, int c, unsigned int n);
extern void user_init(void);
extern void user_pre_init(void);
extern unsigned int stub_radio_isr(unsigned int period);

volatile uint32 stub_sink;

/* The start-up path the SDK runs (from libdriver's call_user_start1): in IRAM, as the
 * real one; it touches every symbol above so the link must provide them. */
void stub_start(void)
{
    stub_sink = (uint32)&_bss_start + (uint32)&_bss_end + (uint32)&_data_start + (uint32)&_data_end
        + (uint32)&_rodata_start + (uint32)&_rodata_end + (uint32)&_heap_start
        + (uint32)&_irom0_text_start + (uint32)&_lit4_end + (uint32)__ctype_ptr__['0' + 1];
    stub_sink += (uint32)memchr("tcpflash", 'f', 8) + stub_radio_isr(stub_sink);
    user_pre_init();
    user_init();
}

/* The exception vectors, in the sections the SDK's scripts place at VECBASE offsets. */
__attribute__((section(".DebugExceptionVector.text"))) void _DebugExceptionVector(void) {}
__attribute__((section(".NMIExceptionVector.text"))) void _NMIExceptionVector(void) {}
__attribute__((section(".KernelExceptionVector.text"))) void _KernelExceptionVector(void) {}
__attribute__((section(".UserExceptionVector.text"))) void _UserExceptionVector(void) {}
__attribute__((section(".DoubleExceptionVector.text"))) void _DoubleExceptionVector(void) {}

FLASH_CODE uint32 system_get_time(void) { return stub_sink; }
FLASH_CODE uint32 system_get_flash_size_map(void) { return 2; }
FLASH_CODE uint8 system_upgrade_userbin_check(void) { return 0; }
FLASH_CODE void system_upgrade_flag_set(uint8 flag) { stub_sink = flag; }
FLASH_CODE void system_upgrade_reboot(void) { stub_sink = 0; }
FLASH_CODE void system_restart(void) { stub_sink = 0; }
FLASH_CODE bool system_partition_table_regist(const void *table, uint32 count, uint32 map)
{
    return table != 0 && count > 0 && map > 1;
}
FLASH_CODE int os_printf_plus(const char *format, ...) { return format[0]; }

/* The SDK runs these from IRAM: they turn the flash cache off. */
uint32 spi_flash_erase_sector(uint16 sector) { return sector > 0x3ff; }
uint32 spi_flash_write(uint32 dest, uint32 *src, uint32 size) { return (dest | size | (uint32)src) & 3; }
uint32 spi_flash_read(uint32 src, uint32 *dest, uint32 size) { return (src | size | (uint32)dest) & 3; }

typedef void timer_func(void *arg);
struct timer { struct timer *next; uint32 expire, period; timer_func *func; void *arg; };
FLASH_CODE void ets_timer_setfn(struct timer *t, timer_func *func, void *arg) { t->func = func; t->arg = arg; }
FLASH_CODE void ets_timer_arm_new(struct timer *t, uint32 time, bool repeat, bool ms) { t->expire = time + repeat + ms; }
FLASH_CODE void ets_timer_disarm(struct timer *t) { t->expire = 0; }

FLASH_CODE bool wifi_set_opmode(uint8 mode) { return mode < 4; }
FLASH_CODE bool wifi_station_set_config(const void *config) { return config != 0; }
FLASH_CODE bool wifi_station_connect(void) { return 1; }
/* struct ip_info: address, netmask, gateway; a stand-in station at 192.168.4.2. */
FLASH_CODE bool wifi_get_ip_info(uint8 if_index, uint32 *info) { info[0] = 0x0204A8C0; info[1] = 0; info[2] = 0; return if_index == 0; }
FLASH_CODE bool wifi_get_macaddr(uint8 if_index, uint8 *mac) { for (int i = 0; i < 6; i++) mac[i] = (uint8)(i + if_index); return 1; }
