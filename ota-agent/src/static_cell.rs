//! Memory in a `static`, handed out once as `&'static mut`: how a firmware gives the agent
//! its buffers (and smoltcp its socket storage) without an allocator and without
//! `static mut` or `unsafe` in its own code.
//!
//! ```
//! use ota_agent::net::OtaBuffers;
//! use ota_agent::static_cell::StaticCell;
//!
//! static OTA: StaticCell<OtaBuffers> = StaticCell::new(OtaBuffers::new());
//!
//! let buffers: &'static mut OtaBuffers = OTA.take();
//! assert!(OTA.try_take().is_none(), "only once");
//! # let _ = buffers;
//! ```
#![allow(unsafe_code)]

use core::cell::UnsafeCell;

/// A value in a `static` that [`StaticCell::take`] lends out mutably exactly once.
pub struct StaticCell<T> {
    value: UnsafeCell<T>,
    taken: Taken,
}

// SAFETY: the value is only reached through `try_take`, which hands out at most one
// reference for the whole program (`Taken::claim` is a test-and-set that can succeed once),
// so no two threads (or interrupt handlers) can ever share it.
unsafe impl<T: Send> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    pub const fn new(value: T) -> StaticCell<T> {
        StaticCell { value: UnsafeCell::new(value), taken: Taken::new() }
    }

    /// The value, the first time; `None` ever after.
    #[allow(clippy::mut_from_ref)] // the point of the type: `claim` makes the reference unique
    pub fn try_take(&'static self) -> Option<&'static mut T> {
        if !self.taken.claim() {
            return None;
        }
        // SAFETY: `claim` succeeded, so this is the only reference ever made.
        Some(unsafe { &mut *self.value.get() })
    }

    /// The value. Panics when it was taken before: a second taker would alias the first.
    pub fn take(&'static self) -> &'static mut T {
        match self.try_take() {
            Some(value) => value,
            None => panic!("StaticCell taken twice"),
        }
    }
}

/// Whether the value was lent out: an atomic flag where the target has atomics.
#[cfg(target_has_atomic = "8")]
struct Taken(core::sync::atomic::AtomicBool);

#[cfg(target_has_atomic = "8")]
impl Taken {
    const fn new() -> Taken {
        Taken(core::sync::atomic::AtomicBool::new(false))
    }

    /// True once: the first call.
    fn claim(&self) -> bool {
        !self.0.swap(true, core::sync::atomic::Ordering::AcqRel)
    }
}

/// The lx106 has no atomic instructions and one core without threads; the agent's memory is
/// taken from the firmware's `main`, never from an interrupt handler, so a plain flag is a
/// test-and-set.
#[cfg(not(target_has_atomic = "8"))]
struct Taken(UnsafeCell<bool>);

#[cfg(not(target_has_atomic = "8"))]
impl Taken {
    const fn new() -> Taken {
        Taken(UnsafeCell::new(false))
    }

    fn claim(&self) -> bool {
        // SAFETY: single core, no threads, not called from interrupts (see above).
        unsafe {
            let taken = &mut *self.0.get();
            !core::mem::replace(taken, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_the_value_once() {
        static CELL: StaticCell<[u8; 4]> = StaticCell::new([1, 2, 3, 4]);
        let value = CELL.take();
        value[0] = 9;
        assert_eq!(*value, [9, 2, 3, 4]);
        assert!(CELL.try_take().is_none());
        assert!(std::panic::catch_unwind(|| CELL.take()).is_err(), "a second take panics");
    }
}
