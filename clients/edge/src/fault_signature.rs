//! Signed game-day fault headers.
//!
//! A game-day client scopes fault rules to its own requests with
//! `x-fleet-fault`. From outside, the edge honours that header (and the
//! internal version pins that come with game days) only when it is signed
//! with the **game-day key** — a secret of its own, not the admin token,
//! which therefore never travels through the edge:
//!
//! ```text
//! x-fleet-fault: scope=drill-7; exp=1764752400; nonce=9f86d081884c7d65; sig=<64 hex>
//! sig = hex(HMAC-SHA256(key, "fleet-fault-v1\n" scope "\n" exp "\n" nonce))
//! ```
//!
//! `exp` is a Unix time in seconds, at most [`MAX_TTL`] ahead of the edge's
//! clock; after it the header is refused, so a captured header cannot be
//! replayed later. The random nonce makes every signed header distinct. The
//! edge verifies, then passes only the bare scope downstream
//! (`x-fleet-fault: drill-7`), where the fault rules match it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far ahead a signature's expiry may lie.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Shortest game-day key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Longest scope, in bytes.
pub const MAX_SCOPE_LEN: usize = 64;
/// Longest signed header value accepted before parsing.
pub const MAX_HEADER_LEN: usize = 256;

const DOMAIN: &str = "fleet-fault-v1";

/// Why a signed fault header was not accepted, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not `scope=…; exp=…; nonce=…; sig=…`.
    #[error(
        "malformed x-fleet-fault: {0} (expected 'scope=S; exp=UNIX_SECONDS; nonce=HEX; sig=HEX')"
    )]
    Malformed(&'static str),
    /// The scope is empty, too long, or has characters outside
    /// `[A-Za-z0-9._-]`.
    #[error("invalid fault scope: 1 to {MAX_SCOPE_LEN} characters of A-Z a-z 0-9 . _ -")]
    Scope,
    /// The expiry has passed.
    #[error("x-fleet-fault signature expired {0} s ago")]
    Expired(u64),
    /// The expiry lies further ahead than [`MAX_TTL`].
    #[error("x-fleet-fault expiry is {0} s ahead; at most {max} s allowed", max = MAX_TTL.as_secs())]
    TooFarAhead(u64),
    /// The signature does not match (wrong key, or an altered header).
    #[error("x-fleet-fault signature does not match")]
    BadSignature,
    /// The key is shorter than [`MIN_KEY_LEN`].
    #[error("game-day key must be at least {MIN_KEY_LEN} bytes")]
    WeakKey,
}

/// The game-day key (`GAMEDAY_KEY`), kept as a keyed HMAC. Its `Debug`
/// never shows it.
#[derive(Clone)]
pub struct GamedayKey(Hmac<Sha256>);

impl std::fmt::Debug for GamedayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GamedayKey(<redacted>)")
    }
}

impl GamedayKey {
    /// A key from its secret.
    ///
    /// # Errors
    /// [`SignatureError::WeakKey`] when shorter than [`MIN_KEY_LEN`].
    pub fn new(secret: &str) -> Result<Self, SignatureError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(SignatureError::WeakKey);
        }
        // HMAC takes keys of any length; an error here is not expected.
        Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map(Self)
            .map_err(|_| SignatureError::WeakKey)
    }

    fn mac(&self, scope: &str, exp: u64, nonce: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(DOMAIN.as_bytes());
        for part in [
            scope.as_bytes(),
            exp.to_string().as_bytes(),
            nonce.as_bytes(),
        ] {
            mac.update(b"\n");
            mac.update(part);
        }
        mac
    }

    /// The header value scoping faults to `scope` until `now + ttl`, with a
    /// fresh random nonce.
    ///
    /// # Errors
    /// [`SignatureError::Scope`] for an invalid scope,
    /// [`SignatureError::TooFarAhead`] when `ttl` exceeds [`MAX_TTL`].
    pub fn sign(
        &self,
        scope: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, SignatureError> {
        let nonce = uuid_nonce();
        self.sign_with_nonce(scope, ttl, now, &nonce)
    }

    fn sign_with_nonce(
        &self,
        scope: &str,
        ttl: Duration,
        now: SystemTime,
        nonce: &str,
    ) -> Result<String, SignatureError> {
        check_scope(scope)?;
        if ttl > MAX_TTL {
            return Err(SignatureError::TooFarAhead(ttl.as_secs()));
        }
        let exp = unix(now).saturating_add(ttl.as_secs());
        let sig = hex(&self.mac(scope, exp, nonce).finalize().into_bytes());
        Ok(format!(
            "scope={scope}; exp={exp}; nonce={nonce}; sig={sig}"
        ))
    }

    /// Verifies a header value at time `now`; returns the scope.
    ///
    /// # Errors
    /// Any [`SignatureError`] but `WeakKey`: malformed, bad scope, expired,
    /// too far ahead, or a signature that does not match (checked in
    /// constant time).
    pub fn verify<'a>(&self, value: &'a str, now: SystemTime) -> Result<&'a str, SignatureError> {
        let signed = SignedFault::parse(value)?;
        let now = unix(now);
        if signed.exp <= now {
            return Err(SignatureError::Expired(now - signed.exp));
        }
        if signed.exp - now > MAX_TTL.as_secs() {
            return Err(SignatureError::TooFarAhead(signed.exp - now));
        }
        self.mac(signed.scope, signed.exp, signed.nonce)
            .verify_slice(&signed.sig)
            .map_err(|_| SignatureError::BadSignature)?;
        Ok(signed.scope)
    }
}

/// A parsed (not yet verified) signed fault header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFault<'a> {
    /// The fault scope.
    pub scope: &'a str,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The nonce (8 to 64 hex digits).
    pub nonce: &'a str,
    /// The 32-byte signature.
    pub sig: Vec<u8>,
}

impl<'a> SignedFault<'a> {
    /// Parses `scope=…; exp=…; nonce=…; sig=…` (in this order, `;` with
    /// optional spaces between).
    ///
    /// # Errors
    /// [`SignatureError::Malformed`] or [`SignatureError::Scope`].
    pub fn parse(value: &'a str) -> Result<Self, SignatureError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(SignatureError::Malformed("too long"));
        }
        let mut parts = value.split(';').map(str::trim);
        let mut field = |name: &'static str| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .and_then(|p| p.strip_prefix('='))
                .ok_or(SignatureError::Malformed(name))
        };
        let scope = field("scope")?;
        let exp = field("exp")?;
        let nonce = field("nonce")?;
        let sig = field("sig")?;
        if parts.next().is_some() {
            return Err(SignatureError::Malformed("trailing fields"));
        }
        check_scope(scope)?;
        if exp.is_empty() || exp.len() > 12 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignatureError::Malformed("exp"));
        }
        let exp = exp.parse().map_err(|_| SignatureError::Malformed("exp"))?;
        if !(8..=64).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SignatureError::Malformed("nonce"));
        }
        let sig = unhex(sig).ok_or(SignatureError::Malformed("sig"))?;
        if sig.len() != 32 {
            return Err(SignatureError::Malformed("sig"));
        }
        Ok(Self {
            scope,
            exp,
            nonce,
            sig,
        })
    }
}

fn check_scope(scope: &str) -> Result<(), SignatureError> {
    let ok = !scope.is_empty()
        && scope.len() <= MAX_SCOPE_LEN
        && scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Scope)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn uuid_nonce() -> String {
    // 16 random hex digits from a v4 UUID's random bits.
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> GamedayKey {
        GamedayKey::new("a-game-day-key-of-32-characters!").unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_signed_header_verifies_until_it_expires_and_never_after() {
        let k = key();
        let h = k
            .sign("drill-7", Duration::from_secs(600), at(1_000_000))
            .unwrap();
        assert!(h.starts_with("scope=drill-7; exp=1000600; nonce="), "{h}");
        assert_eq!(k.verify(&h, at(1_000_000)), Ok("drill-7"));
        assert_eq!(k.verify(&h, at(1_000_599)), Ok("drill-7"));
        // Replayed at or after its expiry: refused.
        assert_eq!(k.verify(&h, at(1_000_600)), Err(SignatureError::Expired(0)));
        assert_eq!(
            k.verify(&h, at(1_003_600)),
            Err(SignatureError::Expired(3000))
        );
    }

    #[test]
    fn another_key_or_any_altered_field_fails_the_signature() {
        let k = key();
        let h = k
            .sign_with_nonce(
                "drill-7",
                Duration::from_secs(60),
                at(1_000),
                "0123456789abcdef",
            )
            .unwrap();
        let other = GamedayKey::new("another-key-of-enough-length").unwrap();
        assert_eq!(
            other.verify(&h, at(1_000)),
            Err(SignatureError::BadSignature)
        );
        for (from, to) in [
            ("scope=drill-7", "scope=drill-8"),
            ("exp=1060", "exp=1061"),
            ("nonce=0123456789abcdef", "nonce=0123456789abcdee"),
        ] {
            let altered = h.replace(from, to);
            assert_ne!(altered, h);
            assert_eq!(
                k.verify(&altered, at(1_000)),
                Err(SignatureError::BadSignature),
                "{altered}"
            );
        }
        // A flipped bit of the signature itself.
        let sig_at = h.find("sig=").unwrap() + 4;
        let mut bytes = h.clone().into_bytes();
        bytes[sig_at] = if bytes[sig_at] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(
            k.verify(&flipped, at(1_000)),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn nonces_make_every_header_distinct() {
        let k = key();
        let a = k.sign("s", Duration::from_secs(60), at(5)).unwrap();
        let b = k.sign("s", Duration::from_secs(60), at(5)).unwrap();
        assert_ne!(a, b);
        assert_eq!(k.verify(&a, at(5)), Ok("s"));
        assert_eq!(k.verify(&b, at(5)), Ok("s"));
    }

    #[test]
    fn expiries_beyond_the_longest_lifetime_are_refused() {
        let k = key();
        assert_eq!(
            k.sign("s", MAX_TTL + Duration::from_secs(1), at(5)),
            Err(SignatureError::TooFarAhead(3601))
        );
        // Signed by a clock far ahead of the edge's.
        let h = k.sign("s", Duration::from_secs(60), at(100_000)).unwrap();
        assert_eq!(
            k.verify(&h, at(10)),
            Err(SignatureError::TooFarAhead(100_050))
        );
    }

    #[test]
    fn malformed_values_are_refused_before_any_crypto() {
        let k = key();
        let sig = "0".repeat(64);
        for (value, why) in [
            ("drill-7", SignatureError::Malformed("scope")),
            ("", SignatureError::Malformed("scope")),
            ("scope=drill", SignatureError::Malformed("exp")),
            (
                &*format!("scope=a; exp=1; nonce=0123456789abcdef; sig={sig}; x=1"),
                SignatureError::Malformed("trailing fields"),
            ),
            (
                &*format!("scope=a b; exp=1; nonce=0123456789abcdef; sig={sig}"),
                SignatureError::Scope,
            ),
            (
                &*format!("scope=; exp=1; nonce=0123456789abcdef; sig={sig}"),
                SignatureError::Scope,
            ),
            (
                &*format!("scope=a; exp=-1; nonce=0123456789abcdef; sig={sig}"),
                SignatureError::Malformed("exp"),
            ),
            (
                &*format!("scope=a; exp=99999999999999999999; nonce=0123456789abcdef; sig={sig}"),
                SignatureError::Malformed("exp"),
            ),
            (
                &*format!("scope=a; exp=1; nonce=xyz; sig={sig}"),
                SignatureError::Malformed("nonce"),
            ),
            (
                "scope=a; exp=1; nonce=0123456789abcdef; sig=abc",
                SignatureError::Malformed("sig"),
            ),
            (
                "scope=a; exp=1; nonce=0123456789abcdef; sig=00",
                SignatureError::Malformed("sig"),
            ),
            (
                &*format!(
                    "scope=a; exp=1; nonce=0123456789abcdef; sig=é{}",
                    "0".repeat(62)
                ),
                SignatureError::Malformed("sig"),
            ),
            (&*"x".repeat(300), SignatureError::Malformed("too long")),
        ] {
            assert_eq!(k.verify(value, at(0)), Err(why), "{value}");
        }
        assert_eq!(
            k.sign(&"s".repeat(65), Duration::from_secs(1), at(0)),
            Err(SignatureError::Scope)
        );
        assert_eq!(
            GamedayKey::new("short").map(|_| ()),
            Err(SignatureError::WeakKey)
        );
        assert_eq!(format!("{:?}", key()), "GamedayKey(<redacted>)");
    }
}
