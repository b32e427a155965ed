//! Query strings of the edge's listing routes — `GET /api/v1/titles`
//! (`ListQuery`: genre, limit, cursor) and `GET
//! /api/v1/users/{user}/ratings` (`RatingsQuery`: limit, cursor) — through
//! the edge's own extractor (`fleet_edge::extract::ApiQuery`) and the
//! handlers' checks (`extract::genre`, `limit`, `cursor`). The first input
//! byte picks the route, the rest is the query string.
//!
//! Asserts: refusals are 400; an accepted query names each known field at
//! most once and nothing else (read with `form_urlencoded`, not the
//! edge's code), its limit is 1-100 (20 when absent), its genre empty or
//! of the id alphabet (at most 64 bytes), its cursor the canonical
//! base64url of the page token the service gets.

#![no_main]

use axum::extract::FromRequestParts;
use fleet_edge::extract::{self, ApiQuery, DEFAULT_LIMIT, encode_cursor};
use fleet_edge::{ListQuery, RatingsQuery};
use http::Request;
use libfuzzer_sys::fuzz_target;

/// The fields of an accepted query, read without the edge's code.
fn fields(query: &str, allowed: &[&str]) -> Vec<(String, String)> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (i, (k, _)) in pairs.iter().enumerate() {
        assert!(allowed.contains(&k.as_str()), "accepted field {k:?}");
        assert!(
            !pairs[..i].iter().any(|(j, _)| j == k),
            "accepted {k:?} twice"
        );
    }
    pairs
}

fn get<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(j, _)| j == k).map(|(_, v)| v.as_str())
}

fn check_limit_and_cursor(pairs: &[(String, String)], limit: u32, cursor: Option<Vec<u8>>) {
    match get(pairs, "limit") {
        None => assert_eq!(limit, DEFAULT_LIMIT),
        Some(l) => assert_eq!(l.parse::<u32>().ok(), Some(limit), "limit {l:?}"),
    }
    assert!((1..=100).contains(&limit));
    match (get(pairs, "cursor"), cursor) {
        (None | Some(""), None) => {}
        (Some(c), Some(token)) => assert_eq!(encode_cursor(&token), c),
        (c, t) => panic!("cursor {c:?} became {t:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, q)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(q) else {
        return;
    };
    let path = if pick % 2 == 0 {
        "/api/v1/titles"
    } else {
        "/api/v1/users/u00001/ratings"
    };
    let Ok(req) = Request::builder().uri(format!("{path}?{query}")).body(()) else {
        return;
    };
    let (mut parts, ()) = req.into_parts();
    let Some(query) = parts.uri.query().map(str::to_owned) else {
        return;
    };

    let result = if pick % 2 == 0 {
        fleet_fuzz::block_on(ApiQuery::<ListQuery>::from_request_parts(&mut parts, &())).and_then(
            |ApiQuery(q)| {
                let genre = extract::genre(q.genre)?.map(String::from);
                let limit = extract::limit(q.limit.as_deref())?.get();
                let cursor = extract::cursor(q.cursor.as_deref())?;
                let pairs = fields(&query, &["genre", "limit", "cursor"]);
                match (get(&pairs, "genre"), genre) {
                    (None | Some(""), None) => {}
                    (Some(g), Some(got)) => {
                        assert_eq!(g, got);
                        assert!(g.len() <= 64);
                        assert!(
                            g.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                        );
                    }
                    (g, got) => panic!("genre {g:?} became {got:?}"),
                }
                check_limit_and_cursor(&pairs, limit, cursor);
                Ok(())
            },
        )
    } else {
        fleet_fuzz::block_on(ApiQuery::<RatingsQuery>::from_request_parts(
            &mut parts,
            &(),
        ))
        .and_then(|ApiQuery(q)| {
            let limit = extract::limit(q.limit.as_deref())?.get();
            let cursor = extract::cursor(q.cursor.as_deref())?;
            let pairs = fields(&query, &["limit", "cursor"]);
            check_limit_and_cursor(&pairs, limit, cursor);
            Ok(())
        })
    };
    if let Err(e) = result {
        assert_eq!(e.status.as_u16(), 400, "{}", e.message);
    }
});
