//! [`InvalidArgument`]: a refused request field, and [`field`], the gRPC
//! services' reading of their requests' fields through the rules.

use std::fmt;

/// A request field that cannot be used: `{field} {reason}`, e.g.
/// `ids[3] may contain only letters, digits, '-' and '_'`. A gRPC service
/// answers it as `INVALID_ARGUMENT` with exactly this text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidArgument {
    /// The field, as named in the proto (`ids[3]` for an item of a list).
    pub field: String,
    /// What is wrong with it, phrased to follow the field's name.
    pub reason: String,
}

impl InvalidArgument {
    /// `field` refused for `reason` (a rule's error, or text).
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// For `map_err`: a rule's error as a refusal of `field`.
    pub fn at<E: fmt::Display>(field: &str) -> impl FnOnce(E) -> Self + '_ {
        move |reason| Self::new(field, reason)
    }
}

/// A proto request's fields read through the rules, as the gRPC services
/// (catalog, ratings, and the dal where it words things the same) read
/// them: proto field types in, the domain type out, or an
/// [`InvalidArgument`] naming the field.
pub mod field {
    use super::InvalidArgument;
    use crate::{
        BatchError, Genre, IdError, Limit, PageToken, PositionSeconds, Stars, check_batch,
    };

    /// An id field (`TitleId`, `UserId`).
    ///
    /// # Errors
    /// `{name} is required`, `… is longer than 64 characters`, `… may
    /// contain only letters, digits, '-' and '_'`.
    pub fn id<T>(name: &str, value: String) -> Result<T, InvalidArgument>
    where
        T: TryFrom<String, Error = IdError>,
    {
        T::try_from(value).map_err(InvalidArgument::at(name))
    }

    /// A repeated id field: at most [`crate::MAX_BATCH`] ids, each valid;
    /// a bad item is named by its index (`ids[3]`).
    ///
    /// # Errors
    /// `{name} holds 101 ids; at most 100 are allowed`, or the first bad
    /// item's id error.
    pub fn ids(name: &str, values: &[String]) -> Result<(), InvalidArgument> {
        check_batch(values).map_err(|e| match e {
            BatchError::TooMany { .. } => InvalidArgument::new(name, e),
            BatchError::Item { index, error } => {
                InvalidArgument::new(format!("{name}[{index}]"), error)
            }
        })
    }

    /// The `genre` filter: empty is every genre (`None`).
    ///
    /// # Errors
    /// `genre …` as for an id.
    pub fn genre(value: String) -> Result<Option<Genre>, InvalidArgument> {
        Genre::optional(value).map_err(InvalidArgument::at("genre"))
    }

    /// The `limit` field: 0 is the default page size.
    ///
    /// # Errors
    /// `limit must be between 1 and 100 (0 for 20)`.
    pub fn limit(value: u32) -> Result<Limit, InvalidArgument> {
        Limit::from_proto(value).map_err(InvalidArgument::at("limit"))
    }

    /// The `page_token` field: empty is the first page (`None`).
    ///
    /// # Errors
    /// `page_token is longer than 1024 bytes`.
    pub fn page_token(value: Vec<u8>) -> Result<Option<PageToken>, InvalidArgument> {
        PageToken::from_proto(value).map_err(InvalidArgument::at("page_token"))
    }

    /// The `stars` field.
    ///
    /// # Errors
    /// `stars must be between 1 and 5`.
    pub fn stars(value: u32) -> Result<Stars, InvalidArgument> {
        Stars::try_from(value).map_err(InvalidArgument::at("stars"))
    }

    /// A viewing position field (`progress.position_s`).
    ///
    /// # Errors
    /// `{name} must be at most 86400 seconds (a whole day)`.
    pub fn position_s(name: &str, value: u32) -> Result<PositionSeconds, InvalidArgument> {
        PositionSeconds::try_from(value).map_err(InvalidArgument::at(name))
    }

    /// A message field that must be present.
    ///
    /// # Errors
    /// `{name} is required`.
    pub fn required<T>(name: &str, value: Option<T>) -> Result<T, InvalidArgument> {
        value.ok_or_else(|| InvalidArgument::new(name, IdError::Empty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_LIMIT, TitleId, UserId};

    #[test]
    fn id_fields_are_named_in_the_refusal() {
        let id: TitleId = field::id("title_id", "t00042".into()).unwrap();
        assert_eq!(id.as_str(), "t00042");
        for (bad, message) in [
            ("", "user_id is required"),
            (
                "u 1",
                "user_id may contain only letters, digits, '-' and '_'",
            ),
            (&"u".repeat(65), "user_id is longer than 64 characters"),
        ] {
            let e = field::id::<UserId>("user_id", bad.to_owned()).unwrap_err();
            assert_eq!(e.field, "user_id");
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn batches_name_the_bad_item_and_cap_their_size() {
        let ok: Vec<String> = (1..=100).map(|n| format!("t{n:05}")).collect();
        assert_eq!(field::ids("ids", &ok), Ok(()));
        let mut too_many = ok.clone();
        too_many.push("t00101".into());
        let e = field::ids("ids", &too_many).unwrap_err();
        assert_eq!(e.to_string(), "ids holds 101 ids; at most 100 are allowed");
        let bad = vec!["t1".to_owned(), "no way".to_owned()];
        let e = field::ids("title_ids", &bad).unwrap_err();
        assert_eq!(e.field, "title_ids[1]");
        assert_eq!(
            e.to_string(),
            "title_ids[1] may contain only letters, digits, '-' and '_'"
        );
    }

    #[test]
    fn paging_fields_default_and_cap() {
        assert_eq!(field::limit(0).map(u32::from), Ok(DEFAULT_LIMIT));
        assert_eq!(field::limit(100).map(u32::from), Ok(100));
        assert_eq!(
            field::limit(101).unwrap_err().to_string(),
            "limit must be between 1 and 100 (0 for 20)"
        );
        assert_eq!(field::page_token(Vec::new()), Ok(None));
        assert!(field::page_token(vec![0; 1024]).unwrap().is_some());
        assert_eq!(
            field::page_token(vec![0; 1025]).unwrap_err().to_string(),
            "page_token is longer than 1024 bytes"
        );
    }

    #[test]
    fn ratings_fields() {
        assert_eq!(field::stars(5).map(u32::from), Ok(5));
        assert_eq!(
            field::stars(0).unwrap_err().to_string(),
            "stars must be between 1 and 5"
        );
        assert_eq!(
            field::position_s("progress.position_s", 86_400).map(u32::from),
            Ok(86_400)
        );
        let e = field::position_s("progress.position_s", 86_401).unwrap_err();
        assert_eq!(e.field, "progress.position_s");
    }

    #[test]
    fn genres_and_required_messages() {
        assert_eq!(field::genre(String::new()), Ok(None));
        assert_eq!(field::genre("sci fi".into()).unwrap_err().field, "genre");
        let e = field::required::<u32>("progress", None).unwrap_err();
        assert_eq!(e.to_string(), "progress is required");
        assert_eq!(field::required("progress", Some(3)), Ok(3));
    }
}
