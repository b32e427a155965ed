//! Driver client for the edge's JSON API (`/api/v1/`), and the JSON model
//! the edge serves ([`model`]).
//!
//! The reference way to call the system from outside: typed methods, one
//! error type ([`EdgeError`]) that keeps the JSON error shape, connection
//! reuse, a per-call timeout, and [`RequestOptions`] for the headers the
//! edge understands (request id, version pins, game-day fault scopes).
//! The end-to-end tests and `fleet load` use it.
//!
//! The client never validates what it sends: path segments are
//! percent-encoded so any string makes a well-formed URL, and the edge
//! decides what is acceptable — so tests can send hostile input through it.

#![forbid(unsafe_code)]

pub mod fault_signature;
pub mod model;

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use model::{
    ErrorBody, HomePage, ProgressRequest, ProgressResponse, RateRequest, RateResponse, RatingPage,
    TitlePage, TitleResponse,
};

/// Header carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";
/// Header listing the instances that served a request's downstream calls.
pub const SERVED_BY: &str = "x-fleet-served-by";
/// Header scoping fault-injection rules to a request; from outside the
/// edge it must be signed with the game-day key ([`fault_signature`]).
pub const FAULT: &str = "x-fleet-fault";
/// How long a fault header signed by [`RequestOptions::fault_scope`] stays
/// valid.
pub const FAULT_TTL: Duration = Duration::from_secs(600);
/// Default per-call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EdgeError {
    /// The edge answered with an error in the JSON error shape.
    #[error("{status} {code}: {message} (request {request_id})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error's `code`.
        code: String,
        /// The error's `message`.
        message: String,
        /// The error's `request_id`.
        request_id: String,
        /// The `Retry-After` header (429, 503), when present.
        retry_after: Option<Duration>,
    },
    /// The edge answered something that is not the documented shape.
    #[error("unexpected response ({status}): {message}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// What was wrong with it.
        message: String,
    },
    /// No answer within the call's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed (refused, reset, …).
    #[error("transport error: {0}")]
    Transport(String),
    /// The client was given something it cannot send (bad base URL or
    /// header).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl EdgeError {
    /// The HTTP status, when the edge answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code, when the edge answered in the error shape.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A successful answer and what came with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply<T> {
    /// The body.
    pub value: T,
    /// The HTTP status (200 for every success of this API).
    pub status: u16,
    /// The request id the edge used.
    pub request_id: String,
    /// The instances (`service/version/instance`) that served the
    /// downstream calls.
    pub served_by: Vec<String>,
}

/// Per-call settings.
#[derive(Clone, Debug, Default)]
pub struct RequestOptions {
    /// Use this request id (the edge makes one otherwise).
    pub request_id: Option<String>,
    /// Overrides the client's timeout for this call.
    pub timeout: Option<Duration>,
    /// Extra headers, e.g. `("x-version-catalog", "1.3")`.
    pub headers: Vec<(String, String)>,
}

impl RequestOptions {
    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Pins `service` to a minor version (`x-version-<service>: 1.3`).
    #[must_use]
    pub fn pin(self, service: &str, major_minor: &str) -> Self {
        self.header(format!("x-version-{service}"), major_minor)
    }

    /// Scopes game-day faults to this request: `x-fleet-fault` signed with
    /// the game-day `key`, valid for [`FAULT_TTL`].
    ///
    /// # Errors
    /// [`fault_signature::SignatureError::Scope`] for a scope the edge
    /// would refuse.
    pub fn fault_scope(
        self,
        scope: &str,
        key: &fault_signature::GamedayKey,
    ) -> Result<Self, fault_signature::SignatureError> {
        let value = key.sign(scope, FAULT_TTL, std::time::SystemTime::now())?;
        Ok(self.header(FAULT, value))
    }
}

/// Client for the edge (cheap to clone; clones share connections).
#[derive(Clone, Debug)]
pub struct EdgeClient {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
}

impl EdgeClient {
    /// A client for the edge at `base_url` (e.g. `http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// [`EdgeError::InvalidRequest`] unless `base_url` is an absolute
    /// `http` or `https` URL.
    pub fn new(base_url: &str) -> Result<Self, EdgeError> {
        let base = Url::parse(base_url)
            .map_err(|e| EdgeError::InvalidRequest(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(EdgeError::InvalidRequest(format!(
                "base URL {base_url:?}: expected http://host:port"
            )));
        }
        // Only ever the address given: no redirects followed, no proxy
        // taken from the environment (a load test must not hit anything
        // else).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| EdgeError::InvalidRequest(e.to_string()))?;
        Ok(Self {
            http,
            base,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Uses `timeout` for calls that do not set their own.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `GET /api/v1/titles/{id}`.
    ///
    /// # Errors
    /// [`EdgeError`]; `Api { status: 404, .. }` for an unknown title.
    pub async fn get_title(
        &self,
        id: &str,
        opts: &RequestOptions,
    ) -> Result<Reply<TitleResponse>, EdgeError> {
        let url = self.url(&["api", "v1", "titles", id], &[])?;
        self.call(Method::GET, url, None::<&()>, opts).await
    }

    /// `GET /api/v1/titles?genre=&limit=&cursor=`.
    ///
    /// # Errors
    /// [`EdgeError`].
    pub async fn list_titles(
        &self,
        genre: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
        opts: &RequestOptions,
    ) -> Result<Reply<TitlePage>, EdgeError> {
        let limit = limit.map(|l| l.to_string());
        let query = [
            ("genre", genre),
            ("limit", limit.as_deref()),
            ("cursor", cursor),
        ];
        let url = self.url(&["api", "v1", "titles"], &query)?;
        self.call(Method::GET, url, None::<&()>, opts).await
    }

    /// `GET /api/v1/users/{user}/home`.
    ///
    /// # Errors
    /// [`EdgeError`].
    pub async fn home(
        &self,
        user: &str,
        opts: &RequestOptions,
    ) -> Result<Reply<HomePage>, EdgeError> {
        let url = self.url(&["api", "v1", "users", user, "home"], &[])?;
        self.call(Method::GET, url, None::<&()>, opts).await
    }

    /// `PUT /api/v1/users/{user}/ratings/{title}` with `{"stars": stars}`.
    ///
    /// # Errors
    /// [`EdgeError`]; 404 for an unknown title, 422 for stars outside 1..=5.
    pub async fn rate_title(
        &self,
        user: &str,
        title: &str,
        stars: u32,
        opts: &RequestOptions,
    ) -> Result<Reply<RateResponse>, EdgeError> {
        let url = self.url(&["api", "v1", "users", user, "ratings", title], &[])?;
        self.call(Method::PUT, url, Some(&RateRequest { stars }), opts)
            .await
    }

    /// `GET /api/v1/users/{user}/ratings?limit=&cursor=`.
    ///
    /// # Errors
    /// [`EdgeError`].
    pub async fn list_ratings(
        &self,
        user: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
        opts: &RequestOptions,
    ) -> Result<Reply<RatingPage>, EdgeError> {
        let limit = limit.map(|l| l.to_string());
        let url = self.url(
            &["api", "v1", "users", user, "ratings"],
            &[("limit", limit.as_deref()), ("cursor", cursor)],
        )?;
        self.call(Method::GET, url, None::<&()>, opts).await
    }

    /// `PUT /api/v1/users/{user}/progress/{title}` with
    /// `{"position_s": position_s}`.
    ///
    /// # Errors
    /// [`EdgeError`]; 404 for an unknown title.
    pub async fn record_progress(
        &self,
        user: &str,
        title: &str,
        position_s: u32,
        opts: &RequestOptions,
    ) -> Result<Reply<ProgressResponse>, EdgeError> {
        let url = self.url(&["api", "v1", "users", user, "progress", title], &[])?;
        self.call(
            Method::PUT,
            url,
            Some(&ProgressRequest { position_s }),
            opts,
        )
        .await
    }

    /// `GET /api/v1/openapi.json`: the OpenAPI document.
    ///
    /// # Errors
    /// [`EdgeError`].
    pub async fn openapi(&self, opts: &RequestOptions) -> Result<serde_json::Value, EdgeError> {
        let url = self.url(&["api", "v1", "openapi.json"], &[])?;
        self.call(Method::GET, url, None::<&()>, opts)
            .await
            .map(|r| r.value)
    }

    fn url(&self, segments: &[&str], query: &[(&str, Option<&str>)]) -> Result<Url, EdgeError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| EdgeError::InvalidRequest("base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(segments);
        let present: Vec<(&str, &str)> = query
            .iter()
            .filter_map(|(k, v)| v.map(|v| (*k, v)))
            .collect();
        if !present.is_empty() {
            url.query_pairs_mut().extend_pairs(present);
        }
        Ok(url)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        opts: &RequestOptions,
    ) -> Result<Reply<T>, EdgeError> {
        let timeout = opts.timeout.unwrap_or(self.timeout);
        let mut headers = HeaderMap::new();
        if let Some(id) = &opts.request_id {
            headers.insert(REQUEST_ID, header_value(id)?);
        }
        for (name, value) in &opts.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| EdgeError::InvalidRequest(format!("header name {name:?}: {e}")))?;
            headers.append(name, header_value(value)?);
        }
        let mut req = self
            .http
            .request(method, url)
            .headers(headers)
            .timeout(timeout);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| transport(e, timeout))?;
        let status = resp.status();
        let request_id = header_str(resp.headers(), REQUEST_ID).unwrap_or_default();
        let served_by = header_str(resp.headers(), SERVED_BY)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let retry_after = header_str(resp.headers(), "retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(|e| transport(e, timeout))?;
        if status.is_success() {
            let value = serde_json::from_slice(&bytes).map_err(|e| EdgeError::Protocol {
                status: status.as_u16(),
                message: format!("undecodable body: {e}"),
            })?;
            return Ok(Reply {
                value,
                status: status.as_u16(),
                request_id,
                served_by,
            });
        }
        Err(api_error(status, &bytes, retry_after))
    }
}

fn api_error(status: StatusCode, bytes: &[u8], retry_after: Option<Duration>) -> EdgeError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => EdgeError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            request_id: body.error.request_id,
            retry_after,
        },
        Err(_) => EdgeError::Protocol {
            status: status.as_u16(),
            message: format!(
                "error without the JSON error shape: {:?}",
                String::from_utf8_lossy(bytes.get(..200).unwrap_or(bytes))
            ),
        },
    }
}

fn header_value(v: &str) -> Result<HeaderValue, EdgeError> {
    HeaderValue::from_str(v)
        .map_err(|e| EdgeError::InvalidRequest(format!("header value {v:?}: {e}")))
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn transport(e: reqwest::Error, timeout: Duration) -> EdgeError {
    if e.is_timeout() {
        EdgeError::Timeout(timeout)
    } else {
        // reqwest's Display leaves out the cause; the chain says what broke.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        EdgeError::Transport(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["", "localhost:8080", "ftp://x", "mailto:a@b"] {
            assert!(
                matches!(EdgeClient::new(bad), Err(EdgeError::InvalidRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn path_segments_are_encoded_never_interpreted() {
        let c = EdgeClient::new("http://127.0.0.1:1/").unwrap();
        let url = c
            .url(&["api", "v1", "titles", "../admin?x=1#y"], &[])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/api/v1/titles/..%2Fadmin%3Fx=1%23y"
        );
        let url = c
            .url(
                &["api", "v1", "titles"],
                &[("genre", Some("sci fi&x=1")), ("cursor", None)],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/api/v1/titles?genre=sci+fi%26x%3D1"
        );
    }

    #[test]
    fn errors_keep_the_json_error_shape() {
        let body = br#"{"error":{"code":"not_found","message":"no title t9","request_id":"r1"}}"#;
        let e = api_error(StatusCode::NOT_FOUND, body, None);
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.code(), Some("not_found"));
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>", None);
        assert!(matches!(e, EdgeError::Protocol { status: 502, .. }));
    }

    #[tokio::test]
    async fn redirects_are_never_followed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut served = 0;
            while let Ok(Ok((mut s, _))) =
                tokio::time::timeout(std::time::Duration::from_millis(500), l.accept()).await
            {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\n\r\n")
                    .await;
                served += 1;
            }
            served
        });
        let c = EdgeClient::new(&format!("http://{addr}")).unwrap();
        let e = c
            .get_title("t00001", &RequestOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(307), "{e:?}");
        assert_eq!(
            server.await.unwrap(),
            1,
            "one request, to the given address only"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transport_error() {
        // Bind then drop: the port is (almost certainly) closed now.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let c = EdgeClient::new(&format!("http://{addr}")).unwrap();
        let e = c
            .get_title("t00001", &RequestOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, EdgeError::Transport(_)), "{e:?}");
    }
}
