//! Input checks: every request is validated before the dal sees it.
//!
//! The edge validates too, but the ratings service is one of its own: any
//! caller gets the same `INVALID_ARGUMENT` naming the field, and a malformed
//! request never costs a dal call (nor writes anything).

/// Most ids a batch may hold, and the largest page.
pub const MAX_BATCH: usize = 100;
/// Page size when the caller sends 0.
pub const DEFAULT_LIMIT: u32 = 20;
/// Longest allowed id.
pub const MAX_ID_LEN: usize = 64;
/// Longest page token accepted; the dal's own tokens are far shorter.
pub const MAX_PAGE_TOKEN_LEN: usize = 1024;
/// Fewest stars.
pub const MIN_STARS: u32 = 1;
/// Most stars.
pub const MAX_STARS: u32 = 5;
/// Largest viewing position: a whole day, in seconds.
pub const MAX_POSITION_S: u32 = 86_400;
/// How far ahead of this instance's clock a write's timestamp may be (a
/// day, far beyond any clock skew).
pub const MAX_FUTURE_MS: i64 = 24 * 60 * 60 * 1000;

/// A request field that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidArgument {
    /// The field, as named in the proto (`ids[3]` for an item of a list).
    pub field: String,
    /// What is wrong with it, phrased to follow the field's name.
    pub reason: String,
}

impl InvalidArgument {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// An id: `[A-Za-z0-9_-]{1,64}`.
pub fn id(field: &str, value: &str) -> Result<(), InvalidArgument> {
    if value.is_empty() {
        return Err(InvalidArgument::new(field, "is required"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidArgument::new(
            field,
            format!("is longer than {MAX_ID_LEN} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(InvalidArgument::new(
            field,
            "may contain only letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

/// A batch of at most [`MAX_BATCH`] ids, each valid.
pub fn ids(field: &str, values: &[String]) -> Result<(), InvalidArgument> {
    if values.len() > MAX_BATCH {
        return Err(InvalidArgument::new(
            field,
            format!(
                "holds {} ids; at most {MAX_BATCH} are allowed",
                values.len()
            ),
        ));
    }
    values
        .iter()
        .enumerate()
        .try_for_each(|(i, v)| id(&format!("{field}[{i}]"), v))
}

/// An optional name filter (a genre): empty means none, otherwise an id.
pub fn optional_name<'a>(field: &str, value: &'a str) -> Result<Option<&'a str>, InvalidArgument> {
    if value.is_empty() {
        return Ok(None);
    }
    id(field, value)?;
    Ok(Some(value))
}

/// A star rating: 1..=5.
pub fn stars(value: u32) -> Result<u32, InvalidArgument> {
    if (MIN_STARS..=MAX_STARS).contains(&value) {
        Ok(value)
    } else {
        Err(InvalidArgument::new(
            "stars",
            format!("must be between {MIN_STARS} and {MAX_STARS}"),
        ))
    }
}

/// A viewing position: 0..=[`MAX_POSITION_S`] seconds.
pub fn position_s(field: &str, value: u32) -> Result<u32, InvalidArgument> {
    if value <= MAX_POSITION_S {
        Ok(value)
    } else {
        Err(InvalidArgument::new(
            field,
            format!("must be at most {MAX_POSITION_S} seconds (a whole day)"),
        ))
    }
}

/// A write's timestamp (ms since the Unix epoch): 0 means "now" and is
/// replaced by `now_ms`; negative values, and values more than
/// [`MAX_FUTURE_MS`] ahead of `now_ms`, are refused, since under
/// last-write-wins a far-future write could never be replaced.
pub fn timestamp(field: &str, value: i64, now_ms: i64) -> Result<i64, InvalidArgument> {
    match value {
        0 => Ok(now_ms),
        v if v < 0 => Err(InvalidArgument::new(
            field,
            "must be milliseconds since the Unix epoch (0 for now)",
        )),
        v if v > now_ms.saturating_add(MAX_FUTURE_MS) => Err(InvalidArgument::new(
            field,
            "is more than a day in the future",
        )),
        v => Ok(v),
    }
}

/// A message field that must be present.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, InvalidArgument> {
    value.ok_or_else(|| InvalidArgument::new(field, "is required"))
}

/// A page size: 0 means [`DEFAULT_LIMIT`], otherwise 1..=[`MAX_BATCH`].
pub fn limit(value: u32) -> Result<u32, InvalidArgument> {
    match value {
        0 => Ok(DEFAULT_LIMIT),
        n if n as usize <= MAX_BATCH => Ok(n),
        _ => Err(InvalidArgument::new(
            "limit",
            format!("must be between 1 and {MAX_BATCH} (0 for {DEFAULT_LIMIT})"),
        )),
    }
}

/// A page token as received: empty is the first page.
pub fn page_token(value: &[u8]) -> Result<Option<&[u8]>, InvalidArgument> {
    if value.len() > MAX_PAGE_TOKEN_LEN {
        return Err(InvalidArgument::new(
            "page_token",
            format!("is longer than {MAX_PAGE_TOKEN_LEN} bytes"),
        ));
    }
    Ok((!value.is_empty()).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_house_alphabet() {
        assert!(id("id", "t00042").is_ok());
        assert!(id("id", "a-b_C9").is_ok());
        assert!(id("id", &"x".repeat(64)).is_ok());
        for (bad, reason) in [
            ("", "is required"),
            ("t 1", "may contain only"),
            ("t/1", "may contain only"),
            ("tü", "may contain only"),
        ] {
            let e = id("id", bad).unwrap_err();
            assert_eq!(e.field, "id");
            assert!(e.reason.contains(reason), "{bad:?}: {e}");
        }
        let e = id("id", &"x".repeat(65)).unwrap_err();
        assert!(e.to_string().starts_with("id is longer than 64"), "{e}");
    }

    #[test]
    fn batches_name_the_bad_item_and_cap_their_size() {
        let ok: Vec<String> = (1..=100).map(|n| format!("t{n:05}")).collect();
        assert!(ids("ids", &ok).is_ok());
        assert!(ids("ids", &[]).is_ok());
        let mut too_many = ok.clone();
        too_many.push("t00101".into());
        assert_eq!(ids("ids", &too_many).unwrap_err().field, "ids");
        let bad = vec!["t1".to_owned(), "no way".to_owned()];
        assert_eq!(ids("ids", &bad).unwrap_err().field, "ids[1]");
    }

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(limit(0), Ok(DEFAULT_LIMIT));
        assert_eq!(limit(1), Ok(1));
        assert_eq!(limit(100), Ok(100));
        assert_eq!(limit(101).unwrap_err().field, "limit");
        assert_eq!(limit(u32::MAX).unwrap_err().field, "limit");
    }

    #[test]
    fn page_tokens_are_bounded() {
        assert_eq!(page_token(b""), Ok(None));
        assert_eq!(page_token(b"abc"), Ok(Some(&b"abc"[..])));
        assert!(page_token(&[0; 1024]).is_ok());
        assert_eq!(page_token(&[0; 1025]).unwrap_err().field, "page_token");
    }

    #[test]
    fn stars_are_one_to_five() {
        assert_eq!(stars(1), Ok(1));
        assert_eq!(stars(5), Ok(5));
        for bad in [0, 6, u32::MAX] {
            let e = stars(bad).unwrap_err();
            assert_eq!(e.to_string(), "stars must be between 1 and 5");
        }
    }

    #[test]
    fn positions_stop_at_a_day() {
        assert_eq!(position_s("progress.position_s", 0), Ok(0));
        assert_eq!(position_s("progress.position_s", 86_400), Ok(86_400));
        let e = position_s("progress.position_s", 86_401).unwrap_err();
        assert_eq!(e.field, "progress.position_s");
    }

    #[test]
    fn timestamps_default_to_now_and_stay_near_it() {
        let now = 1_767_225_600_000;
        assert_eq!(timestamp("rated_at_ms", 0, now), Ok(now));
        assert_eq!(timestamp("rated_at_ms", 1, now), Ok(1));
        assert_eq!(
            timestamp("rated_at_ms", now + MAX_FUTURE_MS, now),
            Ok(now + MAX_FUTURE_MS)
        );
        for bad in [-1, i64::MIN, now + MAX_FUTURE_MS + 1, i64::MAX] {
            let e = timestamp("rated_at_ms", bad, now).unwrap_err();
            assert_eq!(e.field, "rated_at_ms", "{bad}");
        }
    }

    #[test]
    fn missing_messages_are_named() {
        let e = required::<u32>("progress", None).unwrap_err();
        assert_eq!(e.to_string(), "progress is required");
        assert_eq!(required("progress", Some(3)), Ok(3));
    }

    #[test]
    fn an_empty_genre_means_all() {
        assert_eq!(optional_name("genre", ""), Ok(None));
        assert_eq!(optional_name("genre", "sci-fi"), Ok(Some("sci-fi")));
        assert_eq!(optional_name("genre", "sci fi").unwrap_err().field, "genre");
    }
}
