//! Page tokens: the position after the last row a page returned.
//!
//! A token is opaque to callers but checked here: a kind byte (so a token
//! from one listing is refused by another), then the key fields. Anything
//! else — truncated, foreign, non-UTF-8, over-long — is `BadToken`, never a
//! panic and never a full scan.

use super::StoreError;

/// Largest token accepted (a kind byte, a timestamp and two ids).
pub const MAX_TOKEN_LEN: usize = 1 + 8 + 2 * 65;

/// Which listing issued a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Titles (of a genre or all): after this title id.
    Titles = 1,
    /// Ratings by user: after (inverted time, title id).
    RatingsByUser = 2,
    /// Ratings by title: after this user id.
    RatingsByTitle = 3,
}

/// Encodes a token of `kind` with an optional timestamp and an id.
pub fn encode(kind: Kind, ts: Option<u64>, id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + id.len());
    out.push(kind as u8);
    if let Some(ts) = ts {
        out.extend_from_slice(&ts.to_be_bytes());
    }
    out.extend_from_slice(id.as_bytes());
    out
}

/// Decodes a token of `kind`; `with_ts` says whether it carries a timestamp.
///
/// # Errors
/// [`StoreError::BadToken`] for anything this store did not issue.
pub fn decode(
    kind: Kind,
    with_ts: bool,
    token: &[u8],
) -> Result<(Option<u64>, String), StoreError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(StoreError::BadToken("too long"));
    }
    let (&k, rest) = token.split_first().ok_or(StoreError::BadToken("empty"))?;
    if k != kind as u8 {
        return Err(StoreError::BadToken("issued by another listing"));
    }
    let (ts, id) = if with_ts {
        if rest.len() < 8 {
            return Err(StoreError::BadToken("truncated"));
        }
        let (ts, id) = rest.split_at(8);
        let mut b = [0u8; 8];
        b.copy_from_slice(ts);
        (Some(u64::from_be_bytes(b)), id)
    } else {
        (None, rest)
    };
    let id = std::str::from_utf8(id).map_err(|_| StoreError::BadToken("not UTF-8"))?;
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StoreError::BadToken("malformed position"));
    }
    Ok((ts, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = encode(Kind::RatingsByUser, Some(42), "t00001");
        assert_eq!(
            decode(Kind::RatingsByUser, true, &t).unwrap(),
            (Some(42), "t00001".to_owned())
        );
        let t = encode(Kind::Titles, None, "t00002");
        assert_eq!(
            decode(Kind::Titles, false, &t).unwrap(),
            (None, "t00002".to_owned())
        );
    }

    #[test]
    fn rejects_foreign_and_garbage() {
        let titles = encode(Kind::Titles, None, "t00002");
        assert!(decode(Kind::RatingsByTitle, false, &titles).is_err());
        for bad in [
            &b""[..],
            &[1],
            &[2, 0, 0],
            &[1, 0xff, 0xfe],
            &[1, b'a', b' ', b'b'],
            &[9u8; 400][..],
        ] {
            assert!(decode(Kind::Titles, false, bad).is_err(), "{bad:?}");
            assert!(decode(Kind::RatingsByUser, true, bad).is_err(), "{bad:?}");
        }
    }
}
