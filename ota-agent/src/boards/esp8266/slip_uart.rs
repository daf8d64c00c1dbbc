//! A smoltcp network device: IP packets framed with SLIP on UART0 (GPIO1 TX, GPIO3 RX).
//! On a PC: `slattach -L -p slip -s 115200 /dev/ttyUSB0` and
//! `ip addr add 192.168.190.1 peer 192.168.190.2 dev sl0 && ip link set sl0 up`.

use super::clock::APB_HZ;
use super::rom;
use crate::slip::{self, Decoder};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Small packets keep the frame buffers small; SLIP at 115200 baud is the bottleneck anyway.
pub const MTU: usize = 576;

const UART0_FIFO: *mut u32 = 0x6000_0000 as *mut u32;
const UART0_STATUS: *const u32 = 0x6000_001C as *const u32;
const RX_COUNT_MASK: u32 = 0xFF;
const TX_COUNT_SHIFT: u32 = 16;
const TX_FIFO_ROOM: u32 = 126;

pub struct SlipUart {
    decoder: Decoder<MTU>,
    frame_ready: bool,
    tx: [u8; MTU],
}

impl SlipUart {
    pub fn new(baud: u32) -> SlipUart {
        // SAFETY: ROM routine setting UART0's divider from the 80 MHz APB clock.
        unsafe { rom::uart_div_modify(0, APB_HZ / baud) };
        SlipUart { decoder: Decoder::new(), frame_ready: false, tx: [0; MTU] }
    }

    /// Drains the UART's receive FIFO until a whole frame is decoded.
    fn pump(&mut self) {
        while !self.frame_ready {
            // SAFETY: UART0 status and FIFO registers.
            let waiting = unsafe { UART0_STATUS.read_volatile() } & RX_COUNT_MASK;
            if waiting == 0 {
                return;
            }
            let byte = unsafe { UART0_FIFO.read_volatile() } as u8;
            // Damaged frames are dropped: TCP retransmits.
            if let Some(Ok(_)) = self.decoder.feed(byte) {
                self.frame_ready = true;
            }
        }
    }
}

fn send_byte(byte: u8) {
    // SAFETY: UART0 status and FIFO registers.
    unsafe {
        while (UART0_STATUS.read_volatile() >> TX_COUNT_SHIFT) & 0xFF >= TX_FIFO_ROOM {}
        UART0_FIFO.write_volatile(u32::from(byte));
    }
}

impl Device for SlipUart {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        self.pump();
        if !self.frame_ready {
            return None;
        }
        self.frame_ready = false;
        let SlipUart { decoder, tx, .. } = self;
        Some((RxToken(decoder.frame()), TxToken(tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

pub struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct TxToken<'a>(&'a mut [u8; MTU]);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let packet = &mut self.0[..len.min(MTU)];
        let result = f(packet);
        slip::encode(packet, send_byte);
        result
    }
}
