//! QEMU's Xtensa semihosting (`simcall`): a2 = call number, a3..a5 = arguments, result in a2.
//! Only what the program needs: open and read a host file, write stdout and stderr, exit.
#![allow(unsafe_code)] // QEMU's semihosting calls

use core::ffi::CStr;
use core::fmt;

use scripted_push::script::{ReadFailed, Source};

const SYS_EXIT: u32 = 1;
const SYS_READ: u32 = 3;
const SYS_WRITE: u32 = 4;
const SYS_OPEN: u32 = 5;
const O_RDONLY: u32 = 0;
const STDOUT: u32 = 1;
const STDERR: u32 = 2;

unsafe extern "C" {
    /// In `semihosting.s`.
    fn qemu_simcall(call: u32, a: u32, b: u32, c: u32) -> i32;
}

/// Ends QEMU with `code` as its exit status.
pub fn exit(code: u32) -> ! {
    // SAFETY: exit reads no memory.
    unsafe { qemu_simcall(SYS_EXIT, code, 0, 0) };
    loop {}
}

fn write(fd: u32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: QEMU reads `bytes.len()` bytes from a live slice.
        let n = unsafe { qemu_simcall(SYS_WRITE, fd, bytes.as_ptr() as u32, bytes.len() as u32) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[(n as usize).min(bytes.len())..];
    }
}

pub fn write_stdout(bytes: &[u8]) {
    write(STDOUT, bytes);
}

/// QEMU's stderr, for messages.
pub struct Stderr;

impl fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write(STDERR, s.as_bytes());
        Ok(())
    }
}

/// A host file opened for reading, relative to QEMU's working directory.
pub struct File {
    fd: u32,
}

impl File {
    pub fn open_read(path: &CStr) -> Option<File> {
        // SAFETY: QEMU reads the NUL-terminated path.
        let fd = unsafe { qemu_simcall(SYS_OPEN, path.as_ptr() as u32, O_RDONLY, 0) };
        (fd >= 0).then_some(File { fd: fd as u32 })
    }
}

impl Source for File {
    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), ReadFailed> {
        while !buf.is_empty() {
            // SAFETY: QEMU writes at most `buf.len()` bytes into a live, exclusive slice.
            let n = unsafe { qemu_simcall(SYS_READ, self.fd, buf.as_mut_ptr() as u32, buf.len() as u32) };
            if n <= 0 {
                return Err(ReadFailed);
            }
            let read = (n as usize).min(buf.len());
            buf = &mut core::mem::take(&mut buf)[read..];
        }
        Ok(())
    }
}
