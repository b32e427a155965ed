//! Loopback addresses for tests: free ones, closed ones, hung ones, and
//! names no other test uses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback address nothing listens on (bound to port 0, then
/// released): for a process that must be told its port, or a dependency
/// that refuses connections.
///
/// # Panics
/// When loopback cannot be bound.
pub fn closed_port() -> SocketAddr {
    let bound = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    match bound {
        Ok(addr) => addr,
        Err(e) => panic!("bind 127.0.0.1:0: {e}"),
    }
}

/// [`closed_port`] as `host:port` text.
pub fn free_addr() -> String {
    closed_port().to_string()
}

/// A loopback listener that accepts connections and never answers: a
/// dependency hung beyond any probe's timeout. Dropping (or aborting) the
/// returned task closes it.
///
/// # Panics
/// When loopback cannot be bound.
pub async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind 127.0.0.1:0: {e}"),
    };
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

/// A name no other test of this machine uses (this process, this
/// moment, this call): `<prefix>_<pid>_<ms>_<n>`, for keyspaces and key
/// prefixes.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000_000);
    format!("{prefix}_{}_{t}_{n}", std::process::id())
}
