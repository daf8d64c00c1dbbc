//! GPIO2 as an output, by register writes.

const GPIO_OUT_W1TS: *mut u32 = 0x6000_0304 as *mut u32;
const GPIO_OUT_W1TC: *mut u32 = 0x6000_0308 as *mut u32;
const GPIO_ENABLE_W1TS: *mut u32 = 0x6000_0310 as *mut u32;
/// IO_MUX register of the GPIO2 pin; function 0 is GPIO2.
const IO_MUX_GPIO2: *mut u32 = 0x6000_0838 as *mut u32;
const IO_MUX_FUNCTION_BITS: u32 = 0x130;
const GPIO2: u32 = 1 << 2;

pub struct Led {
    on: bool,
}

impl Led {
    pub fn gpio2() -> Led {
        // SAFETY: fixed ESP8266 peripheral registers; nothing else drives GPIO2.
        unsafe {
            IO_MUX_GPIO2.write_volatile(IO_MUX_GPIO2.read_volatile() & !IO_MUX_FUNCTION_BITS);
            GPIO_ENABLE_W1TS.write_volatile(GPIO2);
        }
        let mut led = Led { on: true };
        led.set(false);
        led
    }

    pub fn set(&mut self, on: bool) {
        // Active low: driving the pin low lights the LED.
        let register = if on { GPIO_OUT_W1TC } else { GPIO_OUT_W1TS };
        // SAFETY: write-1-to-set/clear registers touch only GPIO2's bit.
        unsafe { register.write_volatile(GPIO2) };
        self.on = on;
    }

    pub fn toggle(&mut self) {
        self.set(!self.on);
    }
}
