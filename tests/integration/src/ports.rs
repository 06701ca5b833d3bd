//! Free TCP ports on loopback addresses.
//!
//! Job: hand out a port that nothing is listening on, so a test server can bind it.
//!
//! How: bind port 0 on the requested address, read the port the kernel chose, close the
//! socket, return the number. Invariants:
//! - within one test process the same port is never handed out twice (a process-wide set
//!   remembers every port returned), so two servers started by one test cannot collide;
//! - across processes (nextest runs tests in parallel processes) a race remains between
//!   closing the probe socket and the server binding it. The server starters in this crate
//!   close that gap by retrying with a fresh port when the server reports
//!   "Address already in use".

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

use crate::error::{HarnessError, Result};

/// How many kernel-chosen ports we look at before giving up.
const ATTEMPTS: u32 = 64;

fn handed_out() -> &'static Mutex<HashSet<(IpAddr, u16)>> {
    static SET: OnceLock<Mutex<HashSet<(IpAddr, u16)>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Returns a TCP port that is currently free on `addr` and has not been returned before by
/// this process for that address.
///
/// `addr` is usually a loopback address such as `127.0.0.1` or `127.0.0.7` (all of
/// `127.0.0.0/8` is routed to `lo` on Linux, so tests can give each process its own address).
pub fn free_port_on(addr: IpAddr) -> Result<u16> {
    for _ in 0..ATTEMPTS {
        let listener = TcpListener::bind(SocketAddr::new(addr, 0))
            .map_err(|e| HarnessError::io(format!("binding a probe socket on {addr}:0"), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io(format!("reading the probe socket's port on {addr}"), e))?
            .port();
        drop(listener);
        // A poisoned lock only means another test thread panicked while holding it; the set
        // itself is still valid.
        let mut set = handed_out().lock().unwrap_or_else(|p| p.into_inner());
        if set.insert((addr, port)) {
            return Ok(port);
        }
    }
    Err(HarnessError::NoFreePort {
        addr,
        attempts: ATTEMPTS,
    })
}

/// [`free_port_on`] for `127.0.0.1`.
pub fn free_port() -> Result<u16> {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
