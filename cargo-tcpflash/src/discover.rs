//! Finding boards by mDNS: `cargo tcpflash list`, and the names behind `--host NAME.local`
//! and `--all`. Boards announce `_tcpflash._tcp.local` (the agent's responder, the SDK's
//! mDNS, or a virtual device with `--name`); the querying is mdns-sd's.
//!
//! Each board's service instance is its firmware's name and an id (`example-blinky-a1b2c3`),
//! so two boards given the same host name still show as two; a name that several boards
//! announce is reported, and a push by that name refuses to pick one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Args;
use miette::Diagnostic;
use serde_json::json;
use thiserror::Error;

/// The service type boards announce.
pub const SERVICE: &str = "_tcpflash._tcp.local.";

/// `cargo tcpflash list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Seconds to listen for boards.
    #[arg(long, default_value = "3", value_name = "SECS", value_parser = crate::cli::parse_seconds)]
    pub timeout: Duration,
    /// One JSON object per board and line instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A board as it announces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Board {
    /// The service instance (`example-blinky-a1b2c3`).
    pub instance: String,
    /// The host name, `kitchen.local`.
    pub host: String,
    pub addrs: Vec<IpAddr>,
    /// The agent's TCP port (the SRV record's).
    pub port: u16,
    /// From the TXT record: `fw`, `ver`, `build`, `slot`, `key`.
    pub firmware: Option<String>,
    pub version: Option<String>,
    pub build: Option<String>,
    pub slot: Option<String>,
    pub key: Option<bool>,
}

impl Board {
    fn from_service(service: &mdns_sd::ResolvedService) -> Board {
        let txt = |key: &str| service.txt_properties.get_property_val_str(key).map(str::to_owned);
        let mut addrs: Vec<IpAddr> = service.addresses.iter().map(|a| a.to_ip_addr()).collect();
        addrs.sort();
        Board {
            instance: service
                .fullname
                .strip_suffix(&format!(".{SERVICE}"))
                .unwrap_or(&service.fullname)
                .to_owned(),
            host: service.host.trim_end_matches('.').to_owned(),
            addrs,
            port: service.port,
            firmware: txt("fw"),
            version: txt("ver"),
            build: txt("build"),
            slot: txt("slot"),
            key: txt("key").map(|key| key == "yes"),
        }
    }

    /// Where to push: each address with the agent's port.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.addrs.iter().map(|&ip| SocketAddr::new(ip, self.port)).collect()
    }

    /// `127.0.0.1:65056`, several joined by `, `.
    pub fn address_text(&self) -> String {
        let endpoints: Vec<String> = self.endpoints().iter().map(ToString::to_string).collect();
        if endpoints.is_empty() { "?".into() } else { endpoints.join(", ") }
    }
}

/// Whether `host` names a board by mDNS (`NAME.local`, `NAME.local.`).
pub fn is_mdns_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.len() > ".local".len() && host[host.len() - ".local".len()..].eq_ignore_ascii_case(".local")
}

fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// What a browse found.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    /// Sorted by host name, then address.
    pub boards: Vec<Board>,
}

impl Fleet {
    /// The boards announcing `host` (`kitchen.local`, either case).
    pub fn by_host(&self, host: &str) -> Vec<&Board> {
        self.boards.iter().filter(|board| same_host(&board.host, host)).collect()
    }

    /// Host names more than one board announces (several instances, or several IPv4
    /// addresses: each board announces one).
    pub fn duplicates(&self) -> Vec<String> {
        let mut count: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for board in &self.boards {
            let entry = count.entry(board.host.to_ascii_lowercase()).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(board.addrs.iter().filter(|a| a.is_ipv4()).count());
        }
        count.into_iter().filter(|(_, (boards, v4))| *boards > 1 || *v4 > 1).map(|(host, _)| host).collect()
    }

    /// The boards running the firmware called `name`.
    pub fn running(&self, name: &str) -> Vec<&Board> {
        self.boards.iter().filter(|board| board.firmware.as_deref() == Some(name)).collect()
    }
}

#[derive(Debug, Error, Diagnostic)]
pub enum DiscoverError {
    #[error("cannot start mDNS discovery: {0}")]
    #[diagnostic(
        code(tcpflash::discover::mdns),
        help("mDNS needs UDP port 5353 and a network interface with multicast; push by address with --host")
    )]
    Mdns(String),

    #[error("no board answers as {host} (listened {} s)", timeout.as_secs_f64())]
    #[diagnostic(
        code(tcpflash::discover::not_found),
        help(
            "`cargo tcpflash list` shows the boards that answer; check the name, that the board is on this \
             network and its firmware answers mDNS (the agent's `mdns` feature), or raise --discover-timeout"
        )
    )]
    NotFound { host: String, timeout: Duration },

    #[error("{} boards answer as {host}: {}", boards.len(), boards.join(", "))]
    #[diagnostic(
        code(tcpflash::discover::ambiguous),
        help(
            "this push will not guess which one you meant: push by address (--host ADDRESS --port PORT), or give the boards distinct names"
        )
    )]
    Ambiguous { host: String, boards: Vec<String> },

    #[error("no board announces the firmware `{firmware}` (listened {} s)", timeout.as_secs_f64())]
    #[diagnostic(
        code(tcpflash::discover::none_running),
        help(
            "`cargo tcpflash list` shows what each board runs; --host NAME pushes to a board running something else"
        )
    )]
    NoneRunning { firmware: String, timeout: Duration },
}

impl DiscoverError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DiscoverError::Ambiguous { .. } => crate::push::exit::USAGE,
            _ => crate::push::exit::NETWORK,
        }
    }
}

/// Listens for `timeout` for boards announcing [`SERVICE`].
pub fn browse(timeout: Duration) -> Result<Fleet, DiscoverError> {
    let mdns = |error: mdns_sd::Error| DiscoverError::Mdns(error.to_string());
    let daemon = mdns_sd::ServiceDaemon::new().map_err(mdns)?;
    let events = daemon.browse(SERVICE).map_err(mdns)?;
    let deadline = Instant::now() + timeout;
    let mut found: BTreeMap<String, Board> = BTreeMap::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match events.recv_timeout(left) {
            Ok(mdns_sd::ServiceEvent::ServiceResolved(service)) => {
                found.insert(service.fullname.clone(), Board::from_service(&service));
            }
            Ok(mdns_sd::ServiceEvent::ServiceRemoved(_, fullname)) => {
                found.remove(&fullname);
            }
            Ok(_) => {}
            // The deadline, or the daemon gone.
            Err(_) => break,
        }
    }
    let _ = daemon.shutdown();
    let mut boards: Vec<Board> = found.into_values().collect();
    boards.sort_by(|a, b| {
        (a.host.to_ascii_lowercase(), &a.addrs, a.port).cmp(&(b.host.to_ascii_lowercase(), &b.addrs, b.port))
    });
    Ok(Fleet { boards })
}

/// The one board answering as `host`.
pub fn resolve<'f>(fleet: &'f Fleet, host: &str, timeout: Duration) -> Result<&'f Board, DiscoverError> {
    match fleet.by_host(host)[..] {
        [] => Err(DiscoverError::NotFound { host: host.to_owned(), timeout }),
        [board] if board.addrs.iter().filter(|a| a.is_ipv4()).count() <= 1 => Ok(board),
        ref several => Err(DiscoverError::Ambiguous {
            host: host.to_owned(),
            boards: several
                .iter()
                .map(|board| format!("{} at {}", board.instance, board.address_text()))
                .collect(),
        }),
    }
}

/// The table `cargo tcpflash list` prints, with a note per name several boards announce.
pub fn table(fleet: &Fleet) -> String {
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 8]> = fleet
        .boards
        .iter()
        .map(|board| {
            [
                board.host.clone(),
                board.address_text(),
                dash(&board.firmware),
                dash(&board.version),
                dash(&board.build),
                dash(&board.slot),
                match board.key {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "-".into(),
                },
                board.instance.clone(),
            ]
        })
        .collect();
    let header =
        ["HOST", "ADDRESS", "FIRMWARE", "VERSION", "BUILD", "SLOT", "KEY", "INSTANCE"].map(String::from);
    let mut out = columns(&header, &rows);
    for host in fleet.duplicates() {
        let boards = fleet.by_host(&host);
        let _ = writeln!(
            out,
            "note: {} boards announce {host} ({}): a push by that name refuses to pick one; push by address",
            boards.iter().map(|b| b.addrs.iter().filter(|a| a.is_ipv4()).count().max(1)).sum::<usize>(),
            boards
                .iter()
                .map(|b| format!("{} at {}", b.instance, b.address_text()))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    out
}

/// Left-aligned columns, two spaces apart, the last one unpadded.
pub fn columns<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Runs `cargo tcpflash list`.
pub fn list(args: &ListArgs) -> Result<(), DiscoverError> {
    crate::build::status("Browsing", &format!("for {SERVICE} boards ({} s)", args.timeout.as_secs_f64()));
    let fleet = browse(args.timeout)?;
    if args.json {
        for board in &fleet.boards {
            let duplicate = fleet.duplicates().contains(&board.host.to_ascii_lowercase());
            println!(
                "{}",
                json!({
                    "host": board.host,
                    "instance": board.instance,
                    "addresses": board.addrs,
                    "port": board.port,
                    "firmware": board.firmware,
                    "version": board.version,
                    "build": board.build,
                    "slot": board.slot,
                    "key": board.key,
                    "duplicate_name": duplicate,
                })
            );
        }
        return Ok(());
    }
    if fleet.boards.is_empty() {
        eprintln!("no board answered within {} s", args.timeout.as_secs_f64());
        return Ok(());
    }
    print!("{}", table(&fleet));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(host: &str, instance: &str, addr: &str, port: u16) -> Board {
        Board {
            instance: instance.into(),
            host: host.into(),
            addrs: vec![addr.parse().unwrap()],
            port,
            firmware: Some("example-blinky".into()),
            version: Some("0.1.0".into()),
            build: Some("0123456789abcdef".into()),
            slot: Some("user1".into()),
            key: Some(false),
        }
    }

    #[test]
    fn mdns_names_end_in_local() {
        assert!(is_mdns_name("kitchen.local"));
        assert!(is_mdns_name("Kitchen.LOCAL."));
        assert!(!is_mdns_name(".local"));
        assert!(!is_mdns_name("10.0.0.4"));
        assert!(!is_mdns_name("kitchen.localdomain"));
    }

    #[test]
    fn a_name_two_boards_announce_is_reported_and_not_resolved() {
        let fleet = Fleet {
            boards: vec![
                board("kitchen.local", "example-blinky-000001", "10.0.0.5", 65056),
                board("Kitchen.local", "example-blinky-000002", "10.0.0.6", 65056),
                board("hall.local", "example-blinky-000003", "10.0.0.7", 65056),
            ],
        };
        assert_eq!(fleet.duplicates(), ["kitchen.local"]);
        let timeout = Duration::from_secs(1);
        let error = resolve(&fleet, "KITCHEN.local", timeout).unwrap_err();
        assert_eq!(
            error.to_string(),
            "2 boards answer as KITCHEN.local: example-blinky-000001 at 10.0.0.5:65056, example-blinky-000002 at 10.0.0.6:65056"
        );
        assert_eq!(error.exit_code(), crate::push::exit::USAGE);
        assert_eq!(resolve(&fleet, "hall.local", timeout).unwrap().instance, "example-blinky-000003");
        assert!(matches!(resolve(&fleet, "attic.local", timeout), Err(DiscoverError::NotFound { .. })));
        let table = table(&fleet);
        assert!(table.contains("note: 2 boards announce kitchen.local"), "{table}");
        // One instance whose name resolves to two IPv4 addresses: two boards as well.
        let mut merged = board("lamp.local", "example-blinky-000004", "10.0.0.8", 65056);
        merged.addrs.push("10.0.0.9".parse().unwrap());
        let fleet = Fleet { boards: vec![merged] };
        assert_eq!(fleet.duplicates(), ["lamp.local"]);
        assert!(matches!(resolve(&fleet, "lamp.local", timeout), Err(DiscoverError::Ambiguous { .. })));
    }

    #[test]
    fn the_table_has_one_row_per_board() {
        let fleet = Fleet { boards: vec![board("a.local", "fw-1", "127.0.0.1", 4001)] };
        assert_eq!(
            table(&fleet),
            "HOST     ADDRESS         FIRMWARE        VERSION  BUILD             SLOT   KEY  INSTANCE\n\
             a.local  127.0.0.1:4001  example-blinky  0.1.0    0123456789abcdef  user1  no   fw-1\n"
        );
    }
}
