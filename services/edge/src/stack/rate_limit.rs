//! Layer: per-client rate limiting (429 + `Retry-After`).
//!
//! Each client address gets a token bucket of `EDGE_RATE_LIMIT` requests
//! per second with a burst of twice that (governor's GCRA). Two things
//! keep hostile input from turning this into a weakness:
//!
//! * **The map of clients is bounded.** Buckets live in a moka cache of at
//!   most `EDGE_RATE_LIMIT_MAX_CLIENTS` entries (TinyLFU admission, so a
//!   flood of one-off addresses cannot push out a busy client's bucket),
//!   and an entry idle long enough to have refilled completely is dropped
//!   (a fresh bucket is the same). IPv6 clients are keyed by their /64,
//!   the block one host usually holds, so one host cannot mint 2^64 keys.
//! * **`X-Forwarded-For` is believed only from trusted proxies**
//!   (`EDGE_TRUSTED_PROXIES`, addresses or CIDR blocks). When the peer is
//!   one, the client is the right-most address in the header that is not
//!   itself a trusted proxy; otherwise the header is ignored and the peer
//!   is the client, so nobody can dodge the limit (or spend someone else's)
//!   by writing a header.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// The forwarded-for header a reverse proxy appends the peer to.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// An address block: an address and how many leading bits must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpBlock {
    addr: IpAddr,
    prefix: u8,
}

/// A malformed address block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8, ::1)")]
pub struct InvalidIpBlock(String);

impl FromStr for IpBlock {
    type Err = InvalidIpBlock;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidIpBlock(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl IpBlock {
    /// Whether `ip` is in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpBlock>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR blocks (empty:
    /// trust nobody).
    ///
    /// # Errors
    /// [`InvalidIpBlock`] naming the first bad entry.
    pub fn parse(list: &str) -> Result<Self, InvalidIpBlock> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(IpBlock::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|b| b.contains(ip))
    }

    /// The client behind `peer`: the peer itself unless it is a trusted
    /// proxy; then the right-most `X-Forwarded-For` entry that is not a
    /// trusted proxy (a malformed entry ends the walk: what lies left of
    /// it cannot be trusted, so the last good hop is the client).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        let hops = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = canonical(ip);
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The rate-limit key of a client: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// The per-client limiter (cheap to clone; clones share).
#[derive(Clone)]
pub struct ClientLimiter {
    quota: Quota,
    buckets: moka::future::Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
    trusted: TrustedProxies,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("quota", &self.quota)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl ClientLimiter {
    /// `rps` requests per second per client (burst `2 × rps`), at most
    /// `max_clients` buckets kept; `None` when `rps` is 0 (off).
    pub fn new(rps: u32, max_clients: u64, trusted: TrustedProxies) -> Option<Self> {
        let rps = NonZeroU32::new(rps)?;
        let burst = rps.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        let quota = Quota::per_second(rps).allow_burst(burst);
        // An idle bucket refills completely within burst / rps = 2 s; a
        // fresh one is then the same, so it need not be kept.
        let refill = quota.replenish_interval() * burst.get();
        let buckets = moka::future::Cache::builder()
            .max_capacity(max_clients)
            .time_to_idle(refill.max(Duration::from_secs(1)))
            .build();
        Some(Self {
            quota,
            buckets,
            trusted,
        })
    }

    /// Takes one request from `client`'s bucket.
    ///
    /// # Errors
    /// How long until the next request would be allowed.
    pub async fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let quota = self.quota;
        let bucket = self
            .buckets
            .get_with(
                key(client),
                async move { Arc::new(RateLimiter::direct(quota)) },
            )
            .await;
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Clients currently tracked (after pending evictions are applied).
    pub async fn tracked_clients(&self) -> u64 {
        self.buckets.run_pending_tasks().await;
        self.buckets.entry_count()
    }

    /// The client a request comes from (see the module docs).
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted.client(peer, headers)
    }
}

/// The middleware (see the module docs); a no-op when limiting is off.
pub async fn layer(
    State(limiter): State<Option<ClientLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(limiter) = &limiter
        && let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>()
    {
        let client = limiter.client_of(peer.ip(), req.headers());
        if let Err(wait) = limiter.check(client).await {
            return ApiError::rate_limited(wait).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn blocks_parse_and_match() {
        let t = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1 ,fd00::/8").unwrap();
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("127.0.0.1")));
        assert!(t.contains(ip("::ffff:127.0.0.1")), "v4-mapped is v4");
        assert!(!t.contains(ip("127.0.0.2")));
        assert!(t.contains(ip("fd12::1")));
        assert!(!t.contains(ip("fe80::1")));
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        for bad in ["10.0.0.0/33", "localhost", "::1/129", "1.2.3.4/x"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = xff("203.0.113.9, 10.1.1.1");
        // From an untrusted peer the header is ignored.
        assert_eq!(t.client(ip("198.51.100.7"), &h), ip("198.51.100.7"));
        // Through two trusted hops: the right-most untrusted entry.
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // A client-written prefix does not help: right to left, the first
        // untrusted address is the one our proxy saw.
        let h = xff("1.1.1.1, 203.0.113.9");
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // Garbage ends the walk at the last good hop.
        let h = xff("1.1.1.1, garbage, 10.2.2.2");
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("10.2.2.2"));
        // No header: the proxy itself.
        assert_eq!(t.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }

    #[tokio::test]
    async fn the_client_map_stays_bounded_under_a_flood_of_addresses() {
        let l = ClientLimiter::new(1, 100, TrustedProxies::default()).unwrap();
        for i in 0..5000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check(a).await;
        }
        let n = l.tracked_clients().await;
        assert!((1..=100).contains(&n), "{n} clients tracked");
    }

    #[tokio::test]
    async fn a_busy_client_keeps_its_bucket_and_ipv6_hosts_share_a_64() {
        let l = ClientLimiter::new(1, 100, TrustedProxies::default()).unwrap();
        let busy = ip("192.0.2.1");
        assert!(l.check(busy).await.is_ok());
        assert!(l.check(busy).await.is_ok());
        assert!(l.check(busy).await.is_err(), "burst of 2 spent");
        // A flood of one-off addresses (each seen once) never evicts a
        // busy client's bucket, which would reset its limit.
        for i in 0..5000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check(a).await;
            if i % 50 == 0 {
                let _ = l.check(busy).await;
                assert!(
                    l.buckets.contains_key(&busy),
                    "the flood pushed out the busy client's bucket at {i}"
                );
            }
        }
        let a = ip("2001:db8:1:2::1");
        let b = ip("2001:db8:1:2:ffff::9");
        assert!(l.check(a).await.is_ok());
        assert!(l.check(b).await.is_ok());
        assert!(l.check(a).await.is_err(), "same /64, one bucket");
        assert!(l.check(ip("2001:db8:1:3::1")).await.is_ok());
    }
}
