//! JSON bodies of every edge route that takes one — `PUT
//! /api/v1/users/{user}/ratings/{title}` (`RateRequest`) and `PUT
//! /api/v1/users/{user}/progress/{title}` (`ProgressRequest`) — through the
//! edge's own extractor (`fleet_edge::extract::ApiJson`, default limits:
//! 4 KiB, depth 32) and the handler's checks (`extract::stars`,
//! `extract::position`). The first input byte picks the route, the rest is
//! the body.
//!
//! Asserts: refusals are 400, 413 or 422, never anything else; 413 exactly
//! for bodies over the limit; 400 only for bodies that are not JSON or are
//! nested too deep (valid JSON within the depth is never 400); what the
//! edge accepts is a JSON object with that one field, a whole number equal
//! to what the handler gets, and within the route's range (stars 1-5,
//! position 0-86400 s). Beside it, the pre-parse depth check
//! (`json_depth_within`) agrees with the real nesting of every valid
//! document at every limit 0-40.

#![no_main]

use axum::body::Body;
use axum::extract::FromRequest;
use fleet_edge::extract::{self, ApiJson, BodyLimit, json_depth_within};
use fleet_edge_client::model::{ProgressRequest, RateRequest};
use fleet_fuzz::Depth;
use http::Request;
use libfuzzer_sys::fuzz_target;

fn request(body: &[u8]) -> Request<Body> {
    let mut req = Request::builder()
        .method("PUT")
        .uri("/api/v1/users/u00001/ratings/t00001")
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    req.extensions_mut().insert(BodyLimit::default());
    req
}

/// The one field of an accepted body, read without the edge's code.
fn field(body: &[u8], name: &str) -> f64 {
    let v: serde_json::Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("accepted non-JSON: {e}"));
    let obj = v.as_object().unwrap_or_else(|| panic!("accepted {v}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), [name], "accepted {v}");
    let n = obj[name].as_f64().unwrap_or_else(|| panic!("accepted {v}"));
    assert!(n.fract() == 0.0, "accepted {v}");
    n
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let limit = BodyLimit::default();
    let depth = serde_json::from_slice::<Depth>(body).ok().map(|d| d.0);
    if let Some(d) = depth {
        for max in 0..=40 {
            assert_eq!(
                json_depth_within(body, max),
                d <= max,
                "depth {d}, limit {max}"
            );
        }
    }

    let refused = if pick % 2 == 0 {
        match fleet_fuzz::block_on(ApiJson::<RateRequest>::from_request(request(body), &())) {
            Ok(ApiJson(r)) => {
                assert_eq!(field(body, "stars"), f64::from(r.stars));
                match extract::stars(r.stars) {
                    Ok(s) => assert!((1..=5).contains(&s.get())),
                    Err(e) => assert_eq!(e.status.as_u16(), 422),
                }
                None
            }
            Err(e) => Some(e),
        }
    } else {
        match fleet_fuzz::block_on(ApiJson::<ProgressRequest>::from_request(request(body), &())) {
            Ok(ApiJson(p)) => {
                assert_eq!(field(body, "position_s"), f64::from(p.position_s));
                match extract::position(p.position_s) {
                    Ok(s) => assert!(s.get() <= 86_400),
                    Err(e) => assert_eq!(e.status.as_u16(), 422),
                }
                None
            }
            Err(e) => Some(e),
        }
    };
    match refused.map(|e| e.status.as_u16()) {
        None => assert!(body.len() <= limit.bytes),
        Some(413) => assert!(body.len() > limit.bytes),
        Some(400) => assert!(
            body.len() <= limit.bytes && depth.is_none_or(|d| d > limit.json_depth),
            "400 for valid JSON within the depth: {}",
            String::from_utf8_lossy(body)
        ),
        Some(422) => assert!(body.len() <= limit.bytes),
        Some(s) => panic!("answered {s}"),
    }
});
