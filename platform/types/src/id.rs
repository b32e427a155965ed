//! Ids — titles, users, genres — and batches of them.

use std::fmt;
use std::str::FromStr;

/// Longest id, in bytes: ids are `[A-Za-z0-9_-]{1,64}` (ASCII, so bytes
/// and characters agree for every valid id).
pub const MAX_ID_LEN: usize = 64;

/// Most ids one batch may hold (and, as [`crate::MAX_LIMIT`], the largest
/// page).
pub const MAX_BATCH: usize = 100;

/// Why a string is not an id. Checked in this order: empty, too long,
/// alphabet. `Display` follows the field's name (`title_id is required`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The empty string.
    #[error("is required")]
    Empty,
    /// More than [`MAX_ID_LEN`] bytes.
    #[error("is longer than {MAX_ID_LEN} characters")]
    TooLong,
    /// A byte outside `[A-Za-z0-9_-]`.
    #[error("may contain only letters, digits, '-' and '_'")]
    Alphabet,
}

/// The id rule, `[A-Za-z0-9_-]{1,64}`, that every id type is built
/// through. Code that passes a message on whole (the dal's writes) checks
/// the message's id fields with it where they stand.
///
/// # Errors
/// [`IdError`].
pub fn check_id(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(IdError::Alphabet);
    }
    Ok(())
}

/// Why a batch of ids cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// More than [`MAX_BATCH`] ids.
    #[error("holds {len} ids; at most {MAX_BATCH} are allowed")]
    TooMany {
        /// How many ids the batch holds.
        len: usize,
    },
    /// The first id that breaks the id rule.
    #[error("holds an invalid id at {index}: it {error}")]
    Item {
        /// Its position in the batch.
        index: usize,
        /// What is wrong with it.
        error: IdError,
    },
}

/// The batch rule: at most [`MAX_BATCH`] ids, each following the id rule
/// (an empty batch is fine). The ids stay where they are: callers pass the
/// checked slice on as it is.
///
/// # Errors
/// [`BatchError`]: too many ids, else the first invalid one.
pub fn check_batch(values: &[String]) -> Result<(), BatchError> {
    if values.len() > MAX_BATCH {
        return Err(BatchError::TooMany { len: values.len() });
    }
    values
        .iter()
        .enumerate()
        .try_for_each(|(index, v)| check_id(v).map_err(|error| BatchError::Item { index, error }))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string (a proto field).
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, IdError> {
                check_id(&value)?;
                Ok(Self(value))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;

            fn try_from(value: &str) -> Result<Self, IdError> {
                check_id(value)?;
                Ok(Self(value.to_owned()))
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::try_from(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type! {
    /// A title's id (`t00042`): `[A-Za-z0-9_-]{1,64}`.
    TitleId
}

id_type! {
    /// A user's id (`u00001`): `[A-Za-z0-9_-]{1,64}`.
    UserId
}

id_type! {
    /// A genre's name as a filter (`sci-fi`): like an id,
    /// `[A-Za-z0-9_-]{1,64}`.
    Genre
}

impl Genre {
    /// A genre filter as requests carry it: empty means every genre
    /// (`None`), anything else must be a genre name.
    ///
    /// # Errors
    /// [`IdError`] for a non-empty value that breaks the id rule.
    pub fn optional(value: String) -> Result<Option<Self>, IdError> {
        if value.is_empty() {
            Ok(None)
        } else {
            Self::try_from(value).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_house_alphabet() {
        for good in ["t00042", "a-b_C9", "u00001", &"x".repeat(64)] {
            assert_eq!(TitleId::try_from(good).unwrap().as_str(), good);
            assert_eq!(good.parse::<UserId>().unwrap().to_string(), good);
        }
        for (bad, error) in [
            ("", IdError::Empty),
            ("t 1", IdError::Alphabet),
            ("t/1", IdError::Alphabet),
            ("../x", IdError::Alphabet),
            ("tü", IdError::Alphabet),
            ("a\0", IdError::Alphabet),
            (&"x".repeat(65), IdError::TooLong),
        ] {
            assert_eq!(TitleId::try_from(bad), Err(error), "{bad:?}");
            assert_eq!(UserId::try_from(bad.to_owned()), Err(error), "{bad:?}");
        }
        // Length is checked before the alphabet.
        assert_eq!(UserId::try_from("ü".repeat(33)), Err(IdError::TooLong));
    }

    #[test]
    fn id_errors_read_after_the_field_name() {
        let reason = |e: IdError| format!("title_id {e}");
        assert_eq!(reason(IdError::Empty), "title_id is required");
        assert_eq!(
            reason(IdError::TooLong),
            "title_id is longer than 64 characters"
        );
        assert_eq!(
            reason(IdError::Alphabet),
            "title_id may contain only letters, digits, '-' and '_'"
        );
    }

    #[test]
    fn serde_reads_ids_through_the_same_rule() {
        let id: TitleId = serde_json::from_str("\"t00042\"").unwrap();
        assert_eq!(id.as_str(), "t00042");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"t00042\"");
        let e = serde_json::from_str::<UserId>("\"u 1\"").unwrap_err();
        assert!(e.to_string().contains("may contain only"), "{e}");
        assert!(serde_json::from_str::<Genre>("\"\"").is_err());
    }

    #[test]
    fn an_empty_genre_means_all() {
        assert_eq!(Genre::optional(String::new()), Ok(None));
        assert_eq!(
            Genre::optional("sci-fi".into()).unwrap().unwrap().as_str(),
            "sci-fi"
        );
        assert_eq!(Genre::optional("sci fi".into()), Err(IdError::Alphabet));
    }

    #[test]
    fn batches_cap_their_size_and_name_the_bad_item() {
        let ok: Vec<String> = (1..=100).map(|n| format!("t{n:05}")).collect();
        assert_eq!(check_batch(&ok), Ok(()));
        assert_eq!(check_batch(&[]), Ok(()));
        let mut too_many = ok.clone();
        too_many.push("t00101".into());
        assert_eq!(
            check_batch(&too_many),
            Err(BatchError::TooMany { len: 101 })
        );
        // Too many is reported before any bad item.
        assert_eq!(
            check_batch(&vec![String::new(); 101]),
            Err(BatchError::TooMany { len: 101 })
        );
        let bad = vec!["t1".to_owned(), "no way".to_owned(), String::new()];
        assert_eq!(
            check_batch(&bad),
            Err(BatchError::Item {
                index: 1,
                error: IdError::Alphabet
            })
        );
    }
}
