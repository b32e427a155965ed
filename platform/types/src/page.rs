//! Paging: the page size ([`Limit`]) and the opaque [`PageToken`].

use std::fmt;
use std::str::FromStr;

use crate::id::MAX_BATCH;

/// Largest page: a batch's worth.
pub const MAX_LIMIT: u32 = MAX_BATCH as u32;

/// Page size when none is asked for (absent at the edge, 0 in a proto
/// request).
pub const DEFAULT_LIMIT: u32 = 20;

/// Longest page token a service accepts, in bytes. Deliberately loose:
/// the tokens the dal hands out are far shorter, and the dal holds its own
/// to its own tighter bound.
pub const MAX_PAGE_TOKEN_LEN: usize = 1024;

/// Why a number is not a page size. `Display` follows the field's name
/// (`limit must be between 1 and 100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Outside 1..=[`MAX_LIMIT`].
    #[error("must be between 1 and {MAX_LIMIT}")]
    OutOfRange(u32),
    /// A proto `limit` outside 0..=[`MAX_LIMIT`] (where 0 asks for the
    /// default); see [`Limit::from_proto`].
    #[error("must be between 1 and {MAX_LIMIT} (0 for {DEFAULT_LIMIT})")]
    OutOfProtoRange(u32),
    /// Text that is not a whole number (`u32`).
    #[error("must be a whole number from 1 to {MAX_LIMIT}")]
    NotANumber,
}

/// A page size: 1..=[`MAX_LIMIT`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct Limit(u32);

impl Limit {
    /// [`DEFAULT_LIMIT`].
    pub const DEFAULT: Self = Self(DEFAULT_LIMIT);

    /// A proto request's `limit`: 0 means [`Limit::DEFAULT`], otherwise
    /// 1..=[`MAX_LIMIT`].
    ///
    /// # Errors
    /// [`LimitError::OutOfProtoRange`].
    pub fn from_proto(value: u32) -> Result<Self, LimitError> {
        match value {
            0 => Ok(Self::DEFAULT),
            n => Self::try_from(n).map_err(|_| LimitError::OutOfProtoRange(n)),
        }
    }

    /// The page size.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The page size as a count of items.
    pub fn as_usize(self) -> usize {
        // At most MAX_LIMIT: fits every usize.
        self.0 as usize
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for Limit {
    type Error = LimitError;

    fn try_from(value: u32) -> Result<Self, LimitError> {
        if (1..=MAX_LIMIT).contains(&value) {
            Ok(Self(value))
        } else {
            Err(LimitError::OutOfRange(value))
        }
    }
}

/// A page size written as a whole number (a query string's `limit=`);
/// `0` is out of range here, absent is the caller's business.
impl FromStr for Limit {
    type Err = LimitError;

    fn from_str(s: &str) -> Result<Self, LimitError> {
        let n: u32 = s.parse().map_err(|_| LimitError::NotANumber)?;
        Self::try_from(n)
    }
}

impl From<Limit> for u32 {
    fn from(limit: Limit) -> u32 {
        limit.0
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why bytes are not a page token. `Display` follows the field's name
/// (`page_token is longer than 1024 bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    /// No bytes: "the first page" is no token at all (see
    /// [`PageToken::from_proto`]).
    #[error("is empty")]
    Empty,
    /// More than [`MAX_PAGE_TOKEN_LEN`] bytes.
    #[error("is longer than {MAX_PAGE_TOKEN_LEN} bytes")]
    TooLong {
        /// How long it was.
        len: usize,
    },
}

/// An opaque page token, as a listing handed it out: 1..=
/// [`MAX_PAGE_TOKEN_LEN`] bytes. Only the service that issued it can read
/// it.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct PageToken(Vec<u8>);

impl PageToken {
    /// A proto request's `page_token`: empty means the first page (`None`).
    ///
    /// # Errors
    /// [`PageTokenError::TooLong`].
    pub fn from_proto(value: Vec<u8>) -> Result<Option<Self>, PageTokenError> {
        if value.is_empty() {
            Ok(None)
        } else {
            Self::try_from(value).map(Some)
        }
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The token's bytes, owned (a proto field).
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Its length in bytes (never 0).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a token has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<u8>> for PageToken {
    type Error = PageTokenError;

    fn try_from(value: Vec<u8>) -> Result<Self, PageTokenError> {
        match value.len() {
            0 => Err(PageTokenError::Empty),
            len if len > MAX_PAGE_TOKEN_LEN => Err(PageTokenError::TooLong { len }),
            _ => Ok(Self(value)),
        }
    }
}

impl From<PageToken> for Vec<u8> {
    fn from(token: PageToken) -> Vec<u8> {
        token.0
    }
}

impl AsRef<[u8]> for PageToken {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Opaque: its length only, never its bytes.
impl fmt::Debug for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageToken({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_one_to_a_hundred() {
        assert_eq!(Limit::try_from(1).map(Limit::get), Ok(1));
        assert_eq!(Limit::try_from(100).map(Limit::get), Ok(100));
        for bad in [0, 101, u32::MAX] {
            assert_eq!(Limit::try_from(bad), Err(LimitError::OutOfRange(bad)));
        }
        assert_eq!(Limit::default().get(), DEFAULT_LIMIT);
        assert_eq!(Limit::DEFAULT.as_usize(), 20);
    }

    #[test]
    fn proto_limits_take_zero_for_the_default() {
        assert_eq!(Limit::from_proto(0), Ok(Limit::DEFAULT));
        assert_eq!(Limit::from_proto(1).map(Limit::get), Ok(1));
        assert_eq!(Limit::from_proto(100).map(Limit::get), Ok(100));
        for bad in [101, u32::MAX] {
            let e = Limit::from_proto(bad).unwrap_err();
            assert_eq!(e, LimitError::OutOfProtoRange(bad));
            assert_eq!(
                format!("limit {e}"),
                "limit must be between 1 and 100 (0 for 20)"
            );
        }
        assert_eq!(
            format!("limit {}", LimitError::OutOfRange(101)),
            "limit must be between 1 and 100"
        );
    }

    #[test]
    fn limits_as_text_are_whole_numbers() {
        assert_eq!("1".parse::<Limit>().map(Limit::get), Ok(1));
        assert_eq!("100".parse::<Limit>().map(Limit::get), Ok(100));
        // What u32's own parser takes, a leading '+' included.
        assert_eq!("+7".parse::<Limit>().map(Limit::get), Ok(7));
        for bad in ["0", "101"] {
            assert!(
                matches!(bad.parse::<Limit>(), Err(LimitError::OutOfRange(_))),
                "{bad}"
            );
        }
        for bad in ["-1", "1e3", "abc", "", " 5", "99999999999999999999"] {
            assert_eq!(bad.parse::<Limit>(), Err(LimitError::NotANumber), "{bad}");
        }
    }

    #[test]
    fn serde_reads_limits_through_the_same_rule() {
        assert_eq!(serde_json::from_str::<Limit>("5").unwrap().get(), 5);
        assert!(serde_json::from_str::<Limit>("0").is_err());
        assert!(serde_json::from_str::<Limit>("101").is_err());
        assert_eq!(serde_json::to_string(&Limit::DEFAULT).unwrap(), "20");
    }

    #[test]
    fn page_tokens_are_bounded() {
        assert_eq!(PageToken::from_proto(Vec::new()), Ok(None));
        let t = PageToken::from_proto(b"abc".to_vec()).unwrap().unwrap();
        assert_eq!(t.as_bytes(), b"abc");
        assert_eq!(t.len(), 3);
        assert!(PageToken::from_proto(vec![0; 1024]).is_ok());
        let e = PageToken::from_proto(vec![0; 1025]).unwrap_err();
        assert_eq!(e, PageTokenError::TooLong { len: 1025 });
        assert_eq!(
            format!("page_token {e}"),
            "page_token is longer than 1024 bytes"
        );
        assert_eq!(PageToken::try_from(Vec::new()), Err(PageTokenError::Empty));
        assert_eq!(format!("{t:?}"), "PageToken(3 bytes)");
    }

    #[test]
    fn serde_reads_page_tokens_through_the_same_rule() {
        let t: PageToken = serde_json::from_str("[1,2,3]").unwrap();
        assert_eq!(t.into_bytes(), vec![1, 2, 3]);
        assert!(serde_json::from_str::<PageToken>("[]").is_err());
        let long = serde_json::to_string(&vec![7_u8; 1025]).unwrap();
        assert!(serde_json::from_str::<PageToken>(&long).is_err());
    }
}
