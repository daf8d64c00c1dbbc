//! mDNS on the SDK platform: the SDK's own responder (`espconn_mdns_init`), given the same
//! records as the smoltcp driver's ([`crate::mdns::Records`]): `_tcpflash._tcp.local` on the
//! agent's port, `HOST.local` with the station's address, and the TXT strings `fw=`,
//! `ver=`, `build=`, `slot=`, `key=`. One difference the SDK imposes: it names the service
//! instance after the host, so a board given its own host name announces
//! `HOST._tcpflash._tcp.local` where the smoltcp responder announces the firmware-and-id
//! instance.
//!
//! [`ota_init`](super::ota_init) with [`AgentConfig::mdns`](crate::net::AgentConfig) set arms
//! a timer that waits for the station's address (the SDK's responder needs it), reads the
//! running firmware's descriptor and starts the SDK's responder once.

use core::ffi::c_char;

use super::ffi::{MDNS_TXT_ENTRIES, MdnsInfo};
use crate::mdns::Records;
use crate::mdns::records::MAX_LABEL;

/// The service name the SDK turns into `_tcpflash._tcp.local`.
const SERVICE: &[u8; 9] = b"tcpflash\0";
/// The longest TXT string (`fw=` and a 32-byte name) and its NUL.
const TXT_STRING: usize = 3 + crate::descriptor::NAME_LEN + 1;
/// TXT strings the records have at most.
const TXT_STRINGS: usize = 5;
const _: () = assert!(TXT_STRINGS <= MDNS_TXT_ENTRIES);

/// The records as the SDK takes them: NUL-terminated strings, kept here for good.
pub struct SdkRecords {
    host: [u8; MAX_LABEL + 1],
    txt: [[u8; TXT_STRING]; TXT_STRINGS],
    txt_count: usize,
    port: u16,
}

impl SdkRecords {
    pub const fn empty() -> SdkRecords {
        SdkRecords { host: [0; MAX_LABEL + 1], txt: [[0; TXT_STRING]; TXT_STRINGS], txt_count: 0, port: 0 }
    }

    pub fn new(records: &Records) -> SdkRecords {
        let mut sdk = SdkRecords::empty();
        let host = records.host();
        sdk.host[..host.len()].copy_from_slice(host);
        for string in records.txt() {
            if sdk.txt_count == TXT_STRINGS || string.len() >= TXT_STRING || string.contains(&0) {
                continue;
            }
            sdk.txt[sdk.txt_count][..string.len()].copy_from_slice(string);
            sdk.txt_count += 1;
        }
        sdk.port = records.port();
        sdk
    }

    /// `struct mdns_info` pointing at these strings, for a station at `ip`.
    pub fn info(&self, ip: [u8; 4]) -> MdnsInfo {
        let mut txt_data = [core::ptr::null::<c_char>(); MDNS_TXT_ENTRIES];
        for (entry, string) in txt_data.iter_mut().zip(&self.txt[..self.txt_count]) {
            *entry = string.as_ptr().cast();
        }
        MdnsInfo {
            host_name: self.host.as_ptr().cast(),
            server_name: SERVICE.as_ptr().cast(),
            server_port: self.port,
            ip_addr: u32::from_ne_bytes(ip) as core::ffi::c_ulong,
            txt_data,
        }
    }
}
