//! Page tokens: the position after the last row a page returned.
//!
//! A token is opaque to callers but checked here: a kind byte (so a token
//! from one listing is refused by another), then the key fields. Anything
//! else — truncated, foreign, non-UTF-8, over-long — is `BadToken`, never a
//! panic and never a full scan.
//!
//! The Cassandra store hands out the driver's own paging state instead of a
//! key position ([`encode_state`]): a kind byte, a CRC-32 over the kind, the
//! listing's scope (the genre, user or title it pages through) and the
//! state, then the state. A truncated, foreign or edited token, or one
//! replayed against another user's listing, fails the checksum here and
//! never reaches the database; one crafted to pass it is refused by the
//! server, which the store also reports as `BadToken`.

use super::StoreError;

/// Largest token accepted: room for the driver's paging state of any of
/// our listings (a partition key and a clustering position of at most two
/// 64-byte ids and a timestamp, plus counters) with headroom.
pub const MAX_TOKEN_LEN: usize = 512;

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
    /// Cassandra: titles (of a genre or all), driver paging state.
    CqlTitles = 0x11,
    /// Cassandra: ratings by user, driver paging state.
    CqlRatingsByUser = 0x12,
    /// Cassandra: ratings by title, driver paging state.
    CqlRatingsByTitle = 0x13,
}

fn state_checksum(kind: Kind, scope: &str, state: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind as u8]);
    h.update(scope.as_bytes());
    // A separator no id can contain, so ("ab", "c…") never equals ("a", "bc…").
    h.update(&[0xff]);
    h.update(state);
    h.finalize()
}

/// Wraps a driver paging `state` for the listing `kind` of `scope`. The
/// state of a page with more to come is never empty; a token wrapping an
/// empty one is not accepted back ([`decode_state`]: truncated).
pub fn encode_state(kind: Kind, scope: &str, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + state.len());
    out.push(kind as u8);
    out.extend_from_slice(&state_checksum(kind, scope, state).to_be_bytes());
    out.extend_from_slice(state);
    out
}

/// Unwraps a token from [`encode_state`] issued for `kind` and `scope`.
///
/// # Errors
/// [`StoreError::BadToken`] for anything else.
pub fn decode_state<'a>(kind: Kind, scope: &str, token: &'a [u8]) -> Result<&'a [u8], StoreError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(StoreError::BadToken("too long"));
    }
    let (&k, rest) = token.split_first().ok_or(StoreError::BadToken("empty"))?;
    if k != kind as u8 {
        return Err(StoreError::BadToken("issued by another listing"));
    }
    if rest.len() <= 4 {
        return Err(StoreError::BadToken("truncated"));
    }
    let (sum, state) = rest.split_at(4);
    let mut b = [0u8; 4];
    b.copy_from_slice(sum);
    if u32::from_be_bytes(b) != state_checksum(kind, scope, state) {
        return Err(StoreError::BadToken("not issued for this listing"));
    }
    Ok(state)
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
            assert!(decode_state(Kind::CqlTitles, "", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn driver_states_are_bound_to_their_listing() {
        let t = encode_state(Kind::CqlRatingsByUser, "u00001", b"\x00\x04abcd");
        assert_eq!(
            decode_state(Kind::CqlRatingsByUser, "u00001", &t).unwrap(),
            b"\x00\x04abcd"
        );
        // Another user's listing, another listing, an edited or cut token.
        assert!(decode_state(Kind::CqlRatingsByUser, "u00002", &t).is_err());
        assert!(decode_state(Kind::CqlRatingsByTitle, "u00001", &t).is_err());
        let mut edited = t.clone();
        *edited.last_mut().unwrap() ^= 1;
        assert!(decode_state(Kind::CqlRatingsByUser, "u00001", &edited).is_err());
        assert!(decode_state(Kind::CqlRatingsByUser, "u00001", &t[..t.len() - 1]).is_err());
        // Embedded tokens are not driver states and vice versa.
        let embedded = encode(Kind::Titles, None, "t00001");
        assert!(decode_state(Kind::CqlTitles, "", &embedded).is_err());
        let cql = encode_state(Kind::CqlTitles, "", b"state");
        assert!(decode(Kind::Titles, false, &cql).is_err());
    }
}
