//! Page tokens, at every door they pass: the edge's `cursor` query value
//! (`fleet_edge::extract::cursor`, base64url), the dal's request check
//! (`fleet_dal::validate::page_token`) and the stores' token decoders
//! (`fleet_dal::store::token`: key positions of the embedded store, driver
//! paging states of the Cassandra store).
//!
//! Asserts: a cursor is accepted exactly when it is the canonical encoding
//! of some bytes (it prints back as itself) of at most 1400 characters,
//! and refusals are 400; the dal takes tokens of 1-512 bytes as given; a
//! token a store accepts is exactly the token it would issue for what it
//! decoded (so no two tokens mean the same position), its id is of the
//! id alphabet; whatever a store issues it accepts back, for that listing
//! and scope only.

#![no_main]

use fleet_dal::store::token::{self, Kind, MAX_TOKEN_LEN};
use fleet_edge::extract::{MAX_CURSOR_LEN, cursor, encode_cursor};
use libfuzzer_sys::fuzz_target;

const KEYED: [(Kind, bool); 3] = [
    (Kind::Titles, false),
    (Kind::RatingsByUser, true),
    (Kind::RatingsByTitle, false),
];
const STATES: [Kind; 3] = [
    Kind::CqlTitles,
    Kind::CqlRatingsByUser,
    Kind::CqlRatingsByTitle,
];
const SCOPES: [&str; 3] = ["", "u00001", "drama"];

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fuzz_target!(|data: &[u8]| {
    // The edge's cursor.
    if let Ok(text) = std::str::from_utf8(data) {
        match cursor(Some(text)) {
            Ok(None) => assert!(text.is_empty()),
            Ok(Some(bytes)) => {
                assert!(text.len() <= MAX_CURSOR_LEN);
                assert_eq!(encode_cursor(&bytes), text, "not the canonical encoding");
            }
            Err(e) => {
                assert_eq!(e.status.as_u16(), 400);
                assert!(!text.is_empty());
            }
        }
    }
    let round = cursor(Some(&encode_cursor(data)));
    if data.is_empty() {
        assert!(matches!(round, Ok(None)));
    } else if encode_cursor(data).len() <= MAX_CURSOR_LEN {
        assert_eq!(round.ok().flatten().as_deref(), Some(data));
    }

    // The dal's request check.
    match fleet_dal::validate::page_token(data.to_vec()) {
        Ok(None) => assert!(data.is_empty()),
        Ok(Some(t)) => assert!(t == data && data.len() <= MAX_TOKEN_LEN),
        Err(_) => assert!(data.len() > MAX_TOKEN_LEN),
    }

    // The stores' decoders: accepted means issued.
    for (kind, with_ts) in KEYED {
        if let Ok((ts, id)) = token::decode(kind, with_ts, data) {
            assert_eq!(ts.is_some(), with_ts);
            assert!(is_id(&id), "{id:?}");
            assert_eq!(token::encode(kind, ts, &id), data, "{kind:?}");
        }
        for (other, other_ts) in KEYED {
            if other != kind {
                let issued = token::encode(other, other_ts.then_some(7), "t00001");
                assert!(token::decode(kind, with_ts, &issued).is_err());
            }
        }
    }
    for kind in STATES {
        for scope in SCOPES {
            if let Ok(state) = token::decode_state(kind, scope, data) {
                assert_eq!(token::encode_state(kind, scope, state), data);
            }
            // Issued for a state, accepted back for this listing only. (The
            // driver's state of a page with more to come is never empty; a
            // token for an empty one is refused as truncated.)
            if !data.is_empty() && data.len() + 5 <= MAX_TOKEN_LEN {
                let issued = token::encode_state(kind, scope, data);
                assert_eq!(token::decode_state(kind, scope, &issued).ok(), Some(data));
                for other in SCOPES.iter().filter(|s| **s != scope) {
                    assert!(
                        token::decode_state(kind, other, &issued).is_err(),
                        "{scope} vs {other}"
                    );
                }
                for (k, with_ts) in KEYED {
                    assert!(token::decode(k, with_ts, &issued).is_err());
                }
            }
        }
    }
    if let Ok(id) = std::str::from_utf8(data)
        && is_id(id)
        && id.len() + 9 <= MAX_TOKEN_LEN
    {
        for (kind, with_ts) in KEYED {
            let ts = with_ts.then_some(u64::MAX - 1);
            let issued = token::encode(kind, ts, id);
            assert_eq!(
                token::decode(kind, with_ts, &issued).ok(),
                Some((ts, id.to_owned()))
            );
        }
    }
});
