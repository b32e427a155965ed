//! The domain's values, each with its one rule.
//!
//! A title id, a user id, a genre, a star rating, a viewing position, a
//! page size and a page token are checked the same way at every door —
//! the edge's extractors, the catalog and ratings services, the dal — so
//! each rule is written here once: a newtype that can only hold a valid
//! value, built through `TryFrom`/`FromStr` (and serde, which goes through
//! the same rule), with a typed error.
//!
//! The errors' `Display` is the reason *phrased to follow the field's
//! name* (`is required`, `must be between 1 and 5`), so a gRPC service
//! says `title_id is required` with [`InvalidArgument`]; the edge words
//! its JSON answers itself from the same typed errors.
//!
//! [`Rating`] and [`Progress`] are the records the dal's and the ratings
//! service's clients share.
//!
//! A leaf crate: it knows no proto, transport or storage types (the proto
//! fields these values travel in are plain `String`, `u32` and bytes).

#![forbid(unsafe_code)]

mod id;
mod invalid;
mod page;
mod position;
mod record;
mod stars;

pub use id::{
    BatchError, Genre, IdError, MAX_BATCH, MAX_ID_LEN, TitleId, UserId, check_batch, check_id,
};
pub use invalid::{InvalidArgument, field};
pub use page::{
    DEFAULT_LIMIT, Limit, LimitError, MAX_LIMIT, MAX_PAGE_TOKEN_LEN, PageToken, PageTokenError,
};
pub use position::{MAX_POSITION_S, PositionError, PositionSeconds};
pub use record::{Progress, Rating};
pub use stars::{MAX_STARS, MIN_STARS, Stars, StarsError};
