//! Route tables (`fleet_rpc::RouteTable::from_json`), as every client reads
//! them from Consul KV or `ROUTES_DIR/<service>.json`, and the version
//! strings in them (`MajorMinor::parse`, also the edge's pin check).
//!
//! Asserts: an accepted table validates, and survives `fleet route`'s
//! round trip (written pretty or compact, it reads back equal); every
//! version key parses and prints back as itself in canonical form; a
//! choice among live versions is always a live version with a positive
//! weight, is made whenever one exists, and a sticky table keeps one
//! cohort on one version whatever the roll.

#![no_main]

use fleet_rpc::routing::{MajorMinor, RouteTable};
use libfuzzer_sys::fuzz_target;

const ROLLS: [f64; 7] = [0.0, 0.25, 0.5, 0.999_999, 1.0, -1.0, f64::NAN];

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(mm) = MajorMinor::parse(s)
    {
        assert_eq!(MajorMinor::parse(&mm.to_string()), Some(mm), "{s:?}");
    }

    let Ok(table) = RouteTable::from_json(data) else {
        return;
    };
    table
        .validate()
        .unwrap_or_else(|e| panic!("accepted, then invalid: {e}"));
    for text in [
        serde_json::to_vec(&table).unwrap_or_else(|e| panic!("{e}")),
        serde_json::to_vec_pretty(&table).unwrap_or_else(|e| panic!("{e}")),
    ] {
        let back = RouteTable::from_json(&text).unwrap_or_else(|e| {
            panic!("{} does not read back: {e}", String::from_utf8_lossy(&text))
        });
        assert_eq!(back, table);
    }

    let mut versions: Vec<(MajorMinor, u32)> = Vec::new();
    for (k, w) in &table.weights {
        let mm =
            MajorMinor::parse(k).unwrap_or_else(|| panic!("accepted key {k:?} does not parse"));
        assert_eq!(mm.major, table.interface);
        assert_eq!(MajorMinor::parse(&mm.to_string()), Some(mm));
        versions.push((mm, *w));
    }
    let stranger = MajorMinor {
        major: table.interface.wrapping_add(1),
        minor: 0,
    };
    let mut lives: Vec<Vec<MajorMinor>> = vec![Vec::new(), vec![stranger]];
    lives.push(versions.iter().map(|(v, _)| *v).collect());
    lives.extend(versions.iter().map(|(v, _)| vec![*v, stranger]));
    for live in &lives {
        let weight_of = |v: &MajorMinor| -> u64 {
            versions
                .iter()
                .filter(|(w, _)| w == v)
                .map(|(_, n)| u64::from(*n))
                .sum()
        };
        let possible = live.iter().any(|v| weight_of(v) > 0);
        for key in [None, Some("u00001"), Some("")] {
            let mut first = None;
            for roll in ROLLS {
                let got = table.choose(live, key, roll);
                match got {
                    Some(v) => assert!(live.contains(&v) && weight_of(&v) > 0, "{v} chosen"),
                    None => assert!(!possible, "nothing chosen among {live:?}"),
                }
                if table.sticky && key.is_some() {
                    assert_eq!(
                        *first.get_or_insert(got),
                        got,
                        "a cohort moved with the roll"
                    );
                }
            }
        }
    }
});
