//! The dal's storage records (`fleet_dal::record::Stored::decode`): the
//! bytes the embedded store (redb) and the Redis cache hand back, a record
//! (version header, CBOR) or a row of the previous release (protobuf). The
//! first input byte picks the table's kind, the rest is the stored value.
//!
//! Asserts: whatever decodes re-encodes as a current record that decodes
//! to the same message, in the record format; a legacy protobuf row
//! written again as protobuf reads back the same, still as protobuf.

#![no_main]

use fleet_dal::record::{Format, Kind, Stored};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const KINDS: [Kind; 4] = [Kind::Title, Kind::Rating, Kind::Progress, Kind::Summary];

fn proto_bytes(s: &Stored) -> Vec<u8> {
    match s {
        Stored::Title(m) => m.encode_to_vec(),
        Stored::Rating(m) => m.encode_to_vec(),
        Stored::Progress(m) => m.encode_to_vec(),
        Stored::Summary(m) => m.encode_to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(pick) % KINDS.len()];
    let Ok((stored, format)) = Stored::decode(kind, bytes) else {
        return;
    };
    assert_eq!(stored.kind(), kind);

    let record = stored
        .encode()
        .unwrap_or_else(|e| panic!("{stored:?} does not encode: {e}"));
    let (again, f) = Stored::decode(kind, &record)
        .unwrap_or_else(|e| panic!("{stored:?} encoded as {record:02x?} does not decode: {e}"));
    assert_eq!(f, Format::Record);
    assert_eq!(again, stored, "record {record:02x?}");

    if format == Format::LegacyProto {
        let proto = proto_bytes(&stored);
        let (again, f) = Stored::decode(kind, &proto)
            .unwrap_or_else(|e| panic!("{stored:?} as protobuf does not decode: {e}"));
        assert_eq!((again, f), (stored, Format::LegacyProto));
    }
});
