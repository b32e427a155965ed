//! The dal's own storage records: the bytes the embedded store (redb) and
//! the Redis cache persist.
//!
//! They are the dal's, not the proto wire types, so a change to
//! `proto/dal/v1` is never a data migration, and a change to what is stored
//! is never an API change. In memory the stores still hand out the proto
//! messages; the conversion happens here, in one place, both ways.
//! (Cassandra stores columns, not blobs: its rows are typed by the CQL
//! schema in `migrations/` and need nothing from this module.)
//!
//! # Format
//!
//! One header byte, then the record as CBOR (serde, self-describing: field
//! names travel with the values). The header names the record's schema
//! version: `(version << 3) | 7`, i.e. `0x0f` for version 1. Read as
//! protobuf, that byte is "field 1, wire type 7", and protobuf has no wire
//! type 7, so no protobuf encoder ever writes it: a record can never be
//! mistaken for a row of the older format, nor the other way round.
//!
//! Evolving a record: a new field gets `#[serde(default)]` and keeps the
//! version (older readers ignore fields they do not know); renaming,
//! removing or changing the meaning of a field is a new version, a new
//! struct and a conversion from the old one in [`decode`].
//!
//! # Rows written before the records (protobuf)
//!
//! Releases before this one stored the proto messages themselves (plain
//! protobuf, no header). For one release the reader still accepts them:
//! bytes that do not start with a record header are decoded as the old
//! protobuf. The embedded store also rewrites every such row as a record
//! when it opens (schema version 2, `store::embedded`), so after the first
//! start of this release none is left on disk; Redis entries in the old
//! format are replaced by the next fill or expire with their TTL. The next
//! release removes the protobuf fallback.

use prost::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use fleet_proto::dal::v1::{Progress, Rating, RatingSummary, Title};

use crate::store::StoreError;

/// The record schema version this build writes.
pub const VERSION: u8 = 1;

/// The header byte of a record of `version` (see the module docs).
const fn header(version: u8) -> u8 {
    (version << 3) | 7
}

/// How the bytes of a stored value were written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A record of [`VERSION`].
    Record,
    /// The protobuf message of releases before the records.
    LegacyProto,
}

/// A stored shape of a proto message, owned by the dal.
pub(crate) trait Record: Serialize + DeserializeOwned {
    /// The message the stores hand out in memory.
    type Message: Message + Default;

    /// The message as this record.
    fn from_message(m: &Self::Message) -> Self;

    /// This record as the message.
    fn into_message(self) -> Self::Message;
}

/// A title, version 1.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TitleV1 {
    id: String,
    name: String,
    genre: String,
    year: u32,
    runtime_min: u32,
    synopsis: String,
}

impl Record for TitleV1 {
    type Message = Title;

    fn from_message(t: &Title) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            genre: t.genre.clone(),
            year: t.year,
            runtime_min: t.runtime_min,
            synopsis: t.synopsis.clone(),
        }
    }

    fn into_message(self) -> Title {
        Title {
            id: self.id,
            name: self.name,
            genre: self.genre,
            year: self.year,
            runtime_min: self.runtime_min,
            synopsis: self.synopsis,
        }
    }
}

/// A user's rating of a title, version 1.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RatingV1 {
    user_id: String,
    title_id: String,
    stars: u32,
    rated_at_ms: i64,
}

impl Record for RatingV1 {
    type Message = Rating;

    fn from_message(r: &Rating) -> Self {
        Self {
            user_id: r.user_id.clone(),
            title_id: r.title_id.clone(),
            stars: r.stars,
            rated_at_ms: r.rated_at_ms,
        }
    }

    fn into_message(self) -> Rating {
        Rating {
            user_id: self.user_id,
            title_id: self.title_id,
            stars: self.stars,
            rated_at_ms: self.rated_at_ms,
        }
    }
}

/// A user's viewing progress in a title, version 1.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProgressV1 {
    user_id: String,
    title_id: String,
    position_s: u32,
    updated_at_ms: i64,
}

impl Record for ProgressV1 {
    type Message = Progress;

    fn from_message(p: &Progress) -> Self {
        Self {
            user_id: p.user_id.clone(),
            title_id: p.title_id.clone(),
            position_s: p.position_s,
            updated_at_ms: p.updated_at_ms,
        }
    }

    fn into_message(self) -> Progress {
        Progress {
            user_id: self.user_id,
            title_id: self.title_id,
            position_s: self.position_s,
            updated_at_ms: self.updated_at_ms,
        }
    }
}

/// A title's rating summary (the Redis cache's), version 1.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SummaryV1 {
    title_id: String,
    count: u64,
    stars_sum: u64,
}

impl Record for SummaryV1 {
    type Message = RatingSummary;

    fn from_message(s: &RatingSummary) -> Self {
        Self {
            title_id: s.title_id.clone(),
            count: s.count,
            stars_sum: s.stars_sum,
        }
    }

    fn into_message(self) -> RatingSummary {
        RatingSummary {
            title_id: self.title_id,
            count: self.count,
            stars_sum: self.stars_sum,
        }
    }
}

/// `message` as a record of [`VERSION`] (header byte, then CBOR).
///
/// # Errors
/// [`StoreError::Corrupt`] if serde cannot encode it (not expected for
/// these plain structs; reported, never panicked on).
pub(crate) fn encode<R: Record>(
    table: &'static str,
    message: &R::Message,
) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![header(VERSION)];
    ciborium::into_writer(&R::from_message(message), &mut out).map_err(|e| {
        StoreError::Corrupt {
            table,
            reason: format!("cannot encode record: {e}"),
        }
    })?;
    Ok(out)
}

/// The message stored in `bytes` (a record, or the older protobuf) and
/// which format it was in.
///
/// # Errors
/// [`StoreError::Corrupt`] naming `table` when the bytes are neither a
/// record this build reads nor protobuf of the message.
pub(crate) fn decode<R: Record>(
    table: &'static str,
    bytes: &[u8],
) -> Result<(R::Message, Format), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { table, reason };
    match bytes.split_first() {
        Some((&h, rest)) if h == header(VERSION) => {
            let record: R = ciborium::from_reader(rest)
                .map_err(|e| corrupt(format!("record v{VERSION}: {e}")))?;
            Ok((record.into_message(), Format::Record))
        }
        Some((&h, _)) if h & 7 == 7 => Err(corrupt(format!(
            "record version {} (this build reads {VERSION}: written by a newer release?)",
            h >> 3
        ))),
        _ => R::Message::decode(bytes)
            .map(|m| (m, Format::LegacyProto))
            .map_err(|e| corrupt(format!("neither a record nor the older protobuf: {e}"))),
    }
}

/// [`decode`] without the format.
///
/// # Errors
/// As [`decode`].
pub(crate) fn read<R: Record>(table: &'static str, bytes: &[u8]) -> Result<R::Message, StoreError> {
    decode::<R>(table, bytes).map(|(m, _)| m)
}

/// Which message a stored value holds: the table it is read from decides,
/// the bytes do not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A title (`TitleV1`).
    Title,
    /// A rating (`RatingV1`).
    Rating,
    /// Viewing progress (`ProgressV1`).
    Progress,
    /// A rating summary (`SummaryV1`, the Redis cache's).
    Summary,
}

/// A stored value as the stores hand it out: the proto message.
///
/// The one public door to this module's decoder and encoder, for code that
/// reads stored bytes outside the stores (the fuzz targets, `fuzz/`); the
/// record structs themselves stay private to the dal.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    /// A title.
    Title(Title),
    /// A rating.
    Rating(Rating),
    /// Viewing progress.
    Progress(Progress),
    /// A rating summary.
    Summary(RatingSummary),
}

impl Stored {
    /// Which kind of value this is.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Title(_) => Kind::Title,
            Self::Rating(_) => Kind::Rating,
            Self::Progress(_) => Kind::Progress,
            Self::Summary(_) => Kind::Summary,
        }
    }

    /// Decodes `bytes` stored for `kind` exactly as the stores read them
    /// (`decode`: a record of [`VERSION`], or the older protobuf).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the bytes are neither.
    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<(Self, Format), StoreError> {
        Ok(match kind {
            Kind::Title => {
                let (m, f) = decode::<TitleV1>("titles", bytes)?;
                (Self::Title(m), f)
            }
            Kind::Rating => {
                let (m, f) = decode::<RatingV1>("ratings", bytes)?;
                (Self::Rating(m), f)
            }
            Kind::Progress => {
                let (m, f) = decode::<ProgressV1>("progress", bytes)?;
                (Self::Progress(m), f)
            }
            Kind::Summary => {
                let (m, f) = decode::<SummaryV1>("summaries", bytes)?;
                (Self::Summary(m), f)
            }
        })
    }

    /// Encodes this value as the stores write it (`encode`: a record of
    /// [`VERSION`]).
    ///
    /// # Errors
    /// As `encode`.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        match self {
            Self::Title(m) => encode::<TitleV1>("titles", m),
            Self::Rating(m) => encode::<RatingV1>("ratings", m),
            Self::Progress(m) => encode::<ProgressV1>("progress", m),
            Self::Summary(m) => encode::<SummaryV1>("summaries", m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn title() -> Title {
        Title {
            id: "t00001".into(),
            name: "The Long Night".into(),
            genre: "drama".into(),
            year: 1999,
            runtime_min: 121,
            synopsis: "…".into(),
        }
    }

    /// A record round-trips, starts with its version header and is not
    /// protobuf. (Catches: writing the proto bytes again, or a header a
    /// protobuf decoder would accept.)
    #[test]
    fn records_round_trip_with_their_header() {
        let t = title();
        let bytes = encode::<TitleV1>("titles", &t).unwrap();
        assert_eq!(bytes[0], 0x0f, "version 1 header");
        assert_ne!(bytes, t.encode_to_vec());
        assert!(
            Title::decode(bytes.as_slice()).is_err(),
            "never valid protobuf"
        );
        assert_eq!(
            decode::<TitleV1>("titles", &bytes).unwrap(),
            (t, Format::Record)
        );
        let r = Rating {
            user_id: "u1".into(),
            title_id: "t1".into(),
            stars: 4,
            rated_at_ms: -3,
        };
        let bytes = encode::<RatingV1>("ratings", &r).unwrap();
        assert_eq!(read::<RatingV1>("ratings", &bytes).unwrap(), r);
        let p = Progress {
            user_id: "u1".into(),
            title_id: "t1".into(),
            position_s: 77,
            updated_at_ms: 9,
        };
        let bytes = encode::<ProgressV1>("progress", &p).unwrap();
        assert_eq!(read::<ProgressV1>("progress", &bytes).unwrap(), p);
        let s = RatingSummary {
            title_id: "t1".into(),
            count: 3,
            stars_sum: 11,
        };
        let bytes = encode::<SummaryV1>("summaries", &s).unwrap();
        assert_eq!(read::<SummaryV1>("summaries", &bytes).unwrap(), s);
    }

    /// The public door decodes what the stores write, for the kind asked,
    /// and refuses another kind's bytes rather than misreading them.
    #[test]
    fn stored_values_decode_as_the_stores_read_them() {
        let t = Stored::Title(title());
        let bytes = t.encode().unwrap();
        assert_eq!(bytes, encode::<TitleV1>("titles", &title()).unwrap());
        assert_eq!(
            Stored::decode(Kind::Title, &bytes).unwrap(),
            (t.clone(), Format::Record)
        );
        assert_eq!(t.kind(), Kind::Title);
        assert!(Stored::decode(Kind::Rating, &bytes).is_err());
        let legacy = Stored::decode(Kind::Title, &title().encode_to_vec()).unwrap();
        assert_eq!(legacy, (t, Format::LegacyProto));
    }

    /// Rows of the previous release (plain protobuf) still read, and say
    /// so. (Catches: dropping the fallback before its release is over.)
    #[test]
    fn the_older_protobuf_rows_still_read() {
        let t = title();
        assert_eq!(
            decode::<TitleV1>("titles", &t.encode_to_vec()).unwrap(),
            (t, Format::LegacyProto)
        );
    }

    /// A record of a later version is refused by name, not misread as
    /// protobuf; garbage is `Corrupt`.
    #[test]
    fn newer_versions_and_garbage_are_refused() {
        let mut bytes = encode::<TitleV1>("titles", &title()).unwrap();
        bytes[0] = header(2);
        let e = decode::<TitleV1>("titles", &bytes).unwrap_err();
        assert!(e.to_string().contains("record version 2"), "{e}");
        let e = decode::<TitleV1>("titles", b"\x0f\xff\x00").unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Corrupt {
                    table: "titles",
                    ..
                }
            ),
            "{e}"
        );
        assert!(decode::<TitleV1>("titles", b"\x0a\xff").is_err());
    }

    /// A field added later (with `#[serde(default)]`) reads old records,
    /// and old readers ignore it: the evolution rule of the module docs.
    #[test]
    fn a_field_added_later_is_not_a_migration() {
        #[derive(Debug, Serialize, Deserialize)]
        struct TitleNext {
            #[serde(flatten)]
            v1: TitleV1,
            #[serde(default)]
            maturity: String,
        }
        let old = TitleV1::from_message(&title());
        let mut bytes = Vec::new();
        ciborium::into_writer(&old, &mut bytes).unwrap();
        let next: TitleNext = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(next.maturity, "");
        let mut newer = Vec::new();
        ciborium::into_writer(
            &TitleNext {
                v1: TitleV1::from_message(&title()),
                maturity: "PG".into(),
            },
            &mut newer,
        )
        .unwrap();
        let read_by_v1: TitleV1 = ciborium::from_reader(newer.as_slice()).unwrap();
        assert_eq!(read_by_v1, old);
    }
}
