//! The OpenCores Ethernet MAC (`open_eth`) as a polled smoltcp device.
//!
//! The MAC moves frames by DMA through 128 descriptors (8 bytes each: length and flags,
//! buffer address): the first `TX_BD_NUM` transmit, the rest receive. Its buffers here live
//! in board RAM below the ESP8266 DRAM range ([`super::ram::ETH_BUFFERS`]). A frame that
//! arrives while no receive descriptor is free is dropped without a trace, so there are
//! more receive descriptors than the agent's receive window (12 KB, 9 full segments) can
//! have in flight.

use core::sync::atomic::{Ordering, compiler_fence};

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::ram::ETH_BUFFERS;

const REGS: u32 = 0x9D03_0000;
const MODER: *mut u32 = REGS as *mut u32;
const INT_SOURCE: *mut u32 = (REGS + 0x04) as *mut u32;
const INT_MASK: *mut u32 = (REGS + 0x08) as *mut u32;
const PACKETLEN: *mut u32 = (REGS + 0x18) as *mut u32;
const TX_BD_NUM: *mut u32 = (REGS + 0x20) as *mut u32;
const MAC_ADDR0: *mut u32 = (REGS + 0x40) as *mut u32;
const MAC_ADDR1: *mut u32 = (REGS + 0x44) as *mut u32;
const DESCRIPTORS: u32 = 0x9D03_0400;

const MODER_RXEN: u32 = 1 << 0;
const MODER_TXEN: u32 = 1 << 1;
const MODER_RST: u32 = 1 << 11;
const MODER_CRCEN: u32 = 1 << 13;
/// Pad short frames to the minimum length.
const MODER_PAD: u32 = 1 << 15;

/// Transmit descriptor: ready (the MAC owns it), wrap, pad, add the CRC.
const TXD_RD: u32 = 1 << 15;
const TXD_WR: u32 = 1 << 13;
const TXD_PAD: u32 = 1 << 12;
const TXD_CRC: u32 = 1 << 11;
/// Receive descriptor: empty (the MAC owns it), wrap.
const RXD_E: u32 = 1 << 15;
const RXD_WRAP: u32 = 1 << 13;

const TX_COUNT: usize = 2;
const RX_COUNT: usize = 16;
const BUFFER: usize = 1536;
/// The MAC appends a 4-byte (zero) frame check sequence to what it receives.
const FCS: usize = 4;
/// Frames longer than this are cut, so a frame plus its FCS always fits a buffer.
const MAX_FRAME: usize = BUFFER - FCS;
const MIN_FRAME: u32 = 64;
/// An Ethernet frame with a 1500-byte payload.
const MTU: usize = 1514;

/// The MAC, its descriptor rings and its buffers.
pub struct OpenEth {
    next_rx: usize,
    next_tx: usize,
}

fn descriptor(index: usize) -> (*mut u32, *mut u32) {
    let at = DESCRIPTORS + 8 * index as u32;
    (at as *mut u32, (at + 4) as *mut u32)
}

fn buffer(index: usize) -> *mut u8 {
    (ETH_BUFFERS + (index * BUFFER) as u32) as *mut u8
}

/// Buffer of receive descriptor `rx`: after the transmit buffers.
fn rx_buffer(rx: usize) -> *mut u8 {
    buffer(TX_COUNT + rx)
}

fn rx_flags(rx: usize) -> u32 {
    RXD_E | if rx == RX_COUNT - 1 { RXD_WRAP } else { 0 }
}

impl OpenEth {
    /// Resets the MAC, sets its address (it resets to zero), lays out both rings and starts
    /// receiving and transmitting. Interrupts stay masked: the device is polled.
    pub fn new(mac: [u8; 6]) -> OpenEth {
        // SAFETY: the MAC's registers and descriptors; the buffers are board RAM that no
        // firmware section occupies (see `super::ram`). One `OpenEth` per board.
        unsafe {
            MODER.write_volatile(MODER_RST);
            MODER.write_volatile(MODER_PAD | MODER_CRCEN);
            INT_MASK.write_volatile(0);
            INT_SOURCE.write_volatile(0x7F);
            PACKETLEN.write_volatile(MIN_FRAME << 16 | MAX_FRAME as u32);
            TX_BD_NUM.write_volatile(TX_COUNT as u32);
            MAC_ADDR1.write_volatile(u32::from(mac[0]) << 8 | u32::from(mac[1]));
            MAC_ADDR0.write_volatile(u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]));
            for tx in 0..TX_COUNT {
                let (flags, pointer) = descriptor(tx);
                pointer.write_volatile(buffer(tx) as u32);
                flags.write_volatile(0);
            }
            for rx in 0..RX_COUNT {
                let (flags, pointer) = descriptor(TX_COUNT + rx);
                pointer.write_volatile(rx_buffer(rx) as u32);
                flags.write_volatile(rx_flags(rx));
            }
            MODER.write_volatile(MODER_PAD | MODER_CRCEN | MODER_TXEN | MODER_RXEN);
        }
        OpenEth { next_rx: 0, next_tx: 0 }
    }
}

impl Device for OpenEth {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let (flags, _) = descriptor(TX_COUNT + self.next_rx);
        // SAFETY: a descriptor register.
        let value = unsafe { flags.read_volatile() };
        if value & RXD_E != 0 {
            return None;
        }
        let len = ((value >> 16) as usize).min(BUFFER).saturating_sub(FCS);
        let rx = RxToken { next_rx: &mut self.next_rx, len };
        Some((rx, TxToken { next_tx: &mut self.next_tx }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        let (flags, _) = descriptor(self.next_tx);
        // SAFETY: a descriptor register.
        let busy = unsafe { flags.read_volatile() } & TXD_RD != 0;
        (!busy).then_some(TxToken { next_tx: &mut self.next_tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps
    }
}

/// A received frame, handed back to the MAC once consumed.
pub struct RxToken<'a> {
    next_rx: &'a mut usize,
    len: usize,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let rx = *self.next_rx;
        // The MAC wrote the buffer before it cleared the empty flag we read.
        compiler_fence(Ordering::Acquire);
        // SAFETY: the MAC is done with this buffer until the descriptor is re-armed below.
        let frame = unsafe { core::slice::from_raw_parts(rx_buffer(rx), self.len) };
        let result = f(frame);
        compiler_fence(Ordering::Release);
        // SAFETY: a descriptor register; the frame slice is gone.
        unsafe { descriptor(TX_COUNT + rx).0.write_volatile(rx_flags(rx)) };
        *self.next_rx = (rx + 1) % RX_COUNT;
        result
    }
}

/// Room for one frame in the next transmit buffer.
pub struct TxToken<'a> {
    next_tx: &'a mut usize,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let tx = *self.next_tx;
        let len = len.min(MTU);
        // QEMU sends a frame as soon as its descriptor is ready; a real MAC takes a while.
        // SAFETY: a descriptor register.
        while unsafe { descriptor(tx).0.read_volatile() } & TXD_RD != 0 {}
        // SAFETY: the MAC no longer owns this buffer (its descriptor is not ready).
        let frame = unsafe { core::slice::from_raw_parts_mut(buffer(tx), len) };
        let result = f(frame);
        compiler_fence(Ordering::Release);
        let wrap = if tx == TX_COUNT - 1 { TXD_WR } else { 0 };
        // SAFETY: a descriptor register: hands the frame to the MAC, which sends it.
        unsafe { descriptor(tx).0.write_volatile((len as u32) << 16 | TXD_RD | TXD_PAD | TXD_CRC | wrap) };
        *self.next_tx = (tx + 1) % TX_COUNT;
        result
    }
}
