/* Stub of the SDK's WiFi driver (libpp in the SDK-shaped tree). Like the real one it has
 * code in IRAM that divides: with the flash cache off, that division must reach the ROM's
 * __udivsi3, never a copy in flash (the test checks where the link sent it). */
typedef unsigned int uint32;
typedef unsigned long long uint64;

volatile uint32 stub_radio_ticks;

uint32 stub_radio_isr(uint32 period)
{
    uint64 wide = (uint64)stub_radio_ticks * period;
    return stub_radio_ticks / (period | 1) + (uint32)(wide >> 32);
}
