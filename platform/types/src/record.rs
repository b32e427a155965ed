//! The records two services' interfaces share: a rating and a viewing
//! position, as the dal's and the ratings service's driver clients return
//! and take them (their wire forms, `dal.v1` and `ratings.v1`, are separate
//! contracts with the same fields; `fleet-proto` converts both).

/// A user's rating of a title.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rating {
    /// User id.
    pub user_id: String,
    /// Title id.
    pub title_id: String,
    /// 1..=5.
    pub stars: u32,
    /// When it was given (ms since the Unix epoch), set once by the first
    /// caller, so a retried write is the same write.
    pub rated_at_ms: i64,
}

/// How far a user has watched a title.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// User id.
    pub user_id: String,
    /// Title id.
    pub title_id: String,
    /// Seconds watched.
    pub position_s: u32,
    /// Client timestamp (ms since the Unix epoch); last write wins.
    pub updated_at_ms: i64,
}
