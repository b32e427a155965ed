//! `fleet-probe`: an HTTP GET health probe for images without a shell.
//!
//! The service images are distroless (no shell, no `wget`), so their
//! `HEALTHCHECK` and the compose health checks run this instead: one
//! HTTP/1.1 GET with a bounded time, success when the status is 2xx. It
//! speaks only what a probe needs — plain `http://`, no redirects, no
//! proxy, no body beyond the status line — on the standard library's
//! blocking sockets, without an async runtime or an HTTP stack.

#![forbid(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

/// The path probed when only a port is known.
pub const DEFAULT_PATH: &str = "/readyz";
/// Longest time for the whole probe, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The status line and headers are read up to this size.
const MAX_HEAD: usize = 8 * 1024;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `http://host:port/path`.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// `host:port`.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting, writing or reading failed (refused, reset, timed out).
    #[error("{what} {addr}: {source}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The peer.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The peer did not answer with an HTTP status line.
    #[error("not an HTTP answer from {addr}: {line:?}")]
    NotHttp {
        /// The peer.
        addr: String,
        /// What came back instead (cut short).
        line: String,
    },
    /// The answer was not 2xx.
    #[error("{url} answered {status}")]
    Status {
        /// The URL probed.
        url: String,
        /// The HTTP status.
        status: u16,
    },
}

/// A parsed `http://host:port/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses a plain-HTTP URL.
    ///
    /// # Errors
    /// [`ProbeError::Url`] for anything but `http://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, ProbeError> {
        let bad = |reason| ProbeError::Url {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are probed"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad("credentials are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port is not a number in 1..=65535"))?,
        };
        if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(bad("the path has spaces or control characters"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// `http://127.0.0.1:<port of addr>/readyz`: the admin port of the
    /// service in this container, from its `ADMIN_ADDR` (`ip:port`).
    ///
    /// # Errors
    /// [`ProbeError::Url`] when `addr` is not `ip:port`.
    pub fn local_readyz(admin_addr: &str) -> Result<Self, ProbeError> {
        let addr: SocketAddr = admin_addr.parse().map_err(|_| ProbeError::Url {
            url: admin_addr.to_owned(),
            reason: "ADMIN_ADDR is not ip:port",
        })?;
        Ok(Self {
            host: "127.0.0.1".to_owned(),
            port: addr.port(),
            path: DEFAULT_PATH.to_owned(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// GETs `target` within `timeout` and returns its status when it is 2xx.
///
/// # Errors
/// [`ProbeError`] when the peer cannot be reached in time, does not speak
/// HTTP, or answers with another status.
pub fn probe(target: &Target, timeout: Duration) -> Result<u16, ProbeError> {
    let deadline = Instant::now() + timeout;
    let authority = target.authority();
    let io = |what, source| ProbeError::Io {
        what,
        addr: authority.clone(),
        source,
    };
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|source| ProbeError::Resolve {
            host: authority.clone(),
            source,
        })?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        let left = remaining(deadline).map_err(|e| io("connecting to", e))?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| io("connecting to", last))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fleet-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, authority
    );
    stream
        .set_write_timeout(Some(remaining(deadline).map_err(|e| io("writing to", e))?))
        .map_err(|e| io("writing to", e))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io("writing to", e))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0_u8; 1024];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let left = remaining(deadline).map_err(|e| io("reading from", e))?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| io("reading from", e))?;
        let n = stream.read(&mut buf).map_err(|e| io("reading from", e))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let status = parse_status(line).ok_or_else(|| ProbeError::NotHttp {
        addr: authority.clone(),
        line: line.chars().take(80).collect(),
    })?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(ProbeError::Status {
            url: target.to_string(),
            status,
        })
    }
}

/// The status of an `HTTP/1.x NNN reason` line.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

fn remaining(deadline: Instant) -> Result<Duration, std::io::Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "probe timed out",
        ))
    } else {
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let t = Target::parse("http://127.0.0.1:9300/readyz").unwrap();
        assert_eq!(
            t,
            Target {
                host: "127.0.0.1".into(),
                port: 9300,
                path: "/readyz".into()
            }
        );
        assert_eq!(t.to_string(), "http://127.0.0.1:9300/readyz");
        let t = Target::parse("http://[::1]:9080/healthz?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9080));
        assert_eq!(t.to_string(), "http://[::1]:9080/healthz?x=1");
        let t = Target::parse("http://consul").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (url, reason) in [
            ("https://127.0.0.1:9300/readyz", "only http://"),
            ("127.0.0.1:9300", "only http://"),
            ("http://", "no host"),
            ("http://:9300/readyz", "no host"),
            ("http://h:0/", "1..=65535"),
            ("http://h:70000/", "1..=65535"),
            ("http://h:x/", "1..=65535"),
            ("http://u:p@h:1/", "credentials"),
            ("http://[::1/", "unclosed"),
            ("http://h:1/a b", "spaces"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(reason), "{url}: {e}");
        }
    }

    #[test]
    fn the_default_target_is_readyz_on_the_admin_port() {
        let t = Target::local_readyz("0.0.0.0:9300").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:9300/readyz");
        assert!(Target::local_readyz("admin:9300").is_err());
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status("HTTP/1.1 2000 OK"), None);
        assert_eq!(parse_status(""), None);
    }
}
