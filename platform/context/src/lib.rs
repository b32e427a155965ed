//! The per-request context that crosses every hop.
//!
//! A server layer builds a [`RequestContext`] from the incoming headers
//! (`x-request-id`, `grpc-timeout`, `x-fleet-caller`, and the propagated
//! headers such as version pins and game-day fault scopes) and runs the
//! handler inside [`RequestContext::scope`]. Driver clients read
//! [`RequestContext::current`] to send the *remaining* budget downstream and
//! to copy the propagated headers, so a handler never threads them by hand.
//!
//! The context is a tokio task-local: work spawned onto other tasks does not
//! inherit it (fan-out inside one handler uses `join`, which does).

#![forbid(unsafe_code)]

pub mod grpc_timeout;
pub mod headers;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

pub use grpc_timeout::{GrpcTimeoutError, format_grpc_timeout, parse_grpc_timeout};

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// Longest request id accepted from a client; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// What one request carries across every hop.
#[derive(Clone, Debug)]
pub struct RequestContext {
    request_id: String,
    deadline: Option<Instant>,
    caller: Option<String>,
    cohort_key: Option<String>,
    propagated: Vec<(HeaderName, HeaderValue)>,
    served_by: Option<Arc<Mutex<Vec<String>>>>,
}

impl RequestContext {
    /// A fresh context with a new random request id and no deadline.
    pub fn new() -> Self {
        Self {
            request_id: new_request_id(),
            deadline: None,
            caller: None,
            cohort_key: None,
            propagated: Vec::new(),
            served_by: None,
        }
    }

    /// Starts collecting which instances served this request's downstream
    /// calls (the edge reports them in `x-fleet-served-by`).
    pub fn with_served_by_collector(mut self) -> Self {
        self.served_by = Some(Arc::new(Mutex::new(Vec::new())));
        self
    }

    /// Notes that `who` (`service/version/instance`) served a downstream
    /// call; a no-op unless a collector was started.
    pub fn record_served_by(&self, who: &str) {
        if let Some(c) = &self.served_by {
            let mut v = c.lock().unwrap_or_else(PoisonError::into_inner);
            if !v.iter().any(|w| w == who) {
                v.push(who.to_owned());
            }
        }
    }

    /// The instances that served downstream calls so far.
    pub fn served_by(&self) -> Vec<String> {
        self.served_by
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .unwrap_or_default()
    }

    /// Uses `id` as the request id when it is acceptable (printable ASCII,
    /// at most [`MAX_REQUEST_ID_LEN`] bytes); otherwise keeps a fresh one.
    pub fn with_request_id(mut self, id: &str) -> Self {
        if is_valid_request_id(id) {
            self.request_id = id.to_owned();
        }
        self
    }

    /// Sets the absolute deadline, keeping the earlier one if one is set.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(match self.deadline {
            Some(existing) => existing.min(deadline),
            None => deadline,
        });
        self
    }

    /// Sets a deadline `budget` from now (keeping an earlier one).
    pub fn with_budget(self, budget: Duration) -> Self {
        self.with_deadline(Instant::now() + budget)
    }

    /// Names the service that sent this request.
    pub fn with_caller(mut self, caller: impl Into<String>) -> Self {
        self.caller = Some(caller.into());
        self
    }

    /// Sets the key that sticky cohort routing hashes (the user id).
    pub fn with_cohort_key(mut self, key: impl Into<String>) -> Self {
        self.cohort_key = Some(key.into());
        self
    }

    /// Adds a header to copy onto every downstream call.
    pub fn with_propagated(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.propagated.retain(|(n, _)| n != name);
        self.propagated.push((name, value));
        self
    }

    /// Builds the context of an incoming request from its headers.
    ///
    /// `now` is when the request arrived; the deadline is `now + grpc-timeout`
    /// when that header is present and well formed. A malformed timeout is
    /// reported so the server can reject the call.
    ///
    /// # Errors
    /// [`GrpcTimeoutError`] when `grpc-timeout` is present but malformed.
    pub fn from_headers(headers: &HeaderMap, now: Instant) -> Result<Self, GrpcTimeoutError> {
        let mut cx = Self::new();
        if let Some(id) = headers
            .get(headers::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
        {
            cx = cx.with_request_id(id);
        }
        if let Some(v) = headers.get(headers::GRPC_TIMEOUT) {
            let timeout = parse_grpc_timeout(v)?;
            cx = cx.with_deadline(now + timeout);
        }
        if let Some(caller) = headers.get(headers::CALLER).and_then(|v| v.to_str().ok()) {
            cx.caller = Some(caller.to_owned());
        }
        if let Some(key) = headers
            .get(headers::COHORT_KEY)
            .and_then(|v| v.to_str().ok())
        {
            cx.cohort_key = Some(key.to_owned());
        }
        // One value per name, the first, as every header above is read:
        // this hop must pass on the value it acts on (a pin, a fault
        // scope), not a later repetition (`write_headers` keeps one).
        for (name, value) in headers {
            if headers::is_propagated(name) && !cx.propagated.iter().any(|(n, _)| n == name) {
                cx.propagated.push((name.clone(), value.clone()));
            }
        }
        Ok(cx)
    }

    /// Writes this context onto an outgoing request's headers: request id,
    /// caller, cohort key and the propagated headers. The deadline is written
    /// by the deadline layer, which also subtracts the per-hop margin.
    pub fn write_headers(&self, headers: &mut HeaderMap, caller: Option<&'static str>) {
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            headers.insert(headers::REQUEST_ID, v);
        }
        if let Some(caller) = caller {
            headers.insert(headers::CALLER, HeaderValue::from_static(caller));
        }
        if let Some(key) = self
            .cohort_key
            .as_deref()
            .and_then(|k| HeaderValue::from_str(k).ok())
        {
            headers.insert(headers::COHORT_KEY, key);
        }
        for (name, value) in &self.propagated {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The context of the request being served by this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `f` with this context as the current one.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The absolute deadline, if the caller gave one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it passed), or `None`.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The calling service, when it said.
    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    /// The key cohort routing hashes, when known.
    pub fn cohort_key(&self) -> Option<&str> {
        self.cohort_key.as_deref()
    }

    /// The game-day fault scope (`x-fleet-fault`) this request carries, if
    /// any: the edge passes it on only from game-day clients.
    pub fn fault_scope(&self) -> Option<&str> {
        self.propagated(headers::FAULT_PREFIX)
            .and_then(|v| v.to_str().ok())
    }

    /// The value of a propagated header, if this request carries it.
    pub fn propagated(&self, name: &str) -> Option<&HeaderValue> {
        self.propagated
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v)
    }
}

impl Default for RequestContext {
    fn default() -> Self {
        Self::new()
    }
}

/// A new random request id (UUID v4, hyphenated).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn incoming_grpc_timeout_becomes_a_deadline() {
        let mut h = HeaderMap::new();
        h.insert(headers::GRPC_TIMEOUT, HeaderValue::from_static("250m"));
        h.insert(headers::REQUEST_ID, HeaderValue::from_static("abc-1"));
        let now = Instant::now();
        let cx = RequestContext::from_headers(&h, now).unwrap();
        assert_eq!(cx.request_id(), "abc-1");
        assert_eq!(cx.deadline(), Some(now + Duration::from_millis(250)));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(cx.remaining(), Some(Duration::from_millis(150)));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(cx.is_expired());
        assert_eq!(cx.remaining(), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn malformed_timeout_is_an_error_not_a_default() {
        let mut h = HeaderMap::new();
        h.insert(headers::GRPC_TIMEOUT, HeaderValue::from_static("12x"));
        assert!(RequestContext::from_headers(&h, Instant::now()).is_err());
    }

    #[tokio::test]
    async fn hostile_request_ids_are_replaced() {
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in ["", "has space", long.as_str()] {
            let cx = RequestContext::new().with_request_id(bad);
            assert_ne!(cx.request_id(), bad);
            assert!(!cx.request_id().is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn earlier_deadline_wins() {
        let now = Instant::now();
        let cx = RequestContext::new()
            .with_deadline(now + Duration::from_secs(2))
            .with_deadline(now + Duration::from_secs(1))
            .with_deadline(now + Duration::from_secs(3));
        assert_eq!(cx.deadline(), Some(now + Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn context_is_visible_inside_scope_only() {
        assert!(RequestContext::current().is_none());
        let cx = RequestContext::new().with_request_id("r-1");
        let seen = cx
            .scope(async { RequestContext::current().map(|c| c.request_id().to_owned()) })
            .await;
        assert_eq!(seen.as_deref(), Some("r-1"));
    }

    #[tokio::test]
    async fn served_by_is_collected_across_clones() {
        let cx = RequestContext::new().with_served_by_collector();
        let seen_inside = cx.clone();
        seen_inside.record_served_by("catalog/1.3.0/c-1");
        seen_inside.record_served_by("catalog/1.3.0/c-1");
        seen_inside.record_served_by("ratings/1.0.0/r-1");
        assert_eq!(
            cx.served_by(),
            vec!["catalog/1.3.0/c-1", "ratings/1.0.0/r-1"]
        );
        let plain = RequestContext::new();
        plain.record_served_by("x");
        assert!(plain.served_by().is_empty());
    }

    /// Found by the `request_context` fuzz target: with a pin sent twice,
    /// this hop read `1.3` but the next one got `1.l-7`.
    #[tokio::test]
    async fn a_repeated_propagated_header_is_read_and_passed_on_as_its_first_value() {
        let mut h = HeaderMap::new();
        h.append("x-version-catalog", HeaderValue::from_static(" 1.3"));
        h.append("x-version-catalog", HeaderValue::from_static(" 1.l-7"));
        h.append("x-fleet-fault", HeaderValue::from_static("drill-7"));
        h.append("x-fleet-fault", HeaderValue::from_static("drill-8"));
        let cx = RequestContext::from_headers(&h, Instant::now()).unwrap();
        assert_eq!(cx.propagated("x-version-catalog").unwrap(), " 1.3");
        let mut wire = HeaderMap::new();
        cx.write_headers(&mut wire, None);
        assert_eq!(
            wire.get_all("x-version-catalog").iter().collect::<Vec<_>>(),
            [" 1.3"]
        );
        assert_eq!(
            wire.get_all("x-fleet-fault").iter().collect::<Vec<_>>(),
            ["drill-7"]
        );
        let next = RequestContext::from_headers(&wire, Instant::now()).unwrap();
        assert_eq!(next.propagated("x-version-catalog").unwrap(), " 1.3");
    }

    #[tokio::test]
    async fn propagated_headers_round_trip() {
        let mut h = HeaderMap::new();
        h.insert("x-version-catalog", HeaderValue::from_static("1.3"));
        h.insert("x-fleet-fault", HeaderValue::from_static("delay"));
        h.insert("authorization", HeaderValue::from_static("secret"));
        let cx = RequestContext::from_headers(&h, Instant::now()).unwrap();
        let mut out = HeaderMap::new();
        cx.write_headers(&mut out, Some("edge"));
        assert_eq!(out.get("x-version-catalog").unwrap(), "1.3");
        assert_eq!(out.get("x-fleet-fault").unwrap(), "delay");
        assert_eq!(cx.fault_scope(), Some("delay"));
        assert_eq!(out.get(headers::CALLER).unwrap(), "edge");
        assert!(out.get("authorization").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_is_a_deadline_that_far_ahead_and_keeps_an_earlier_one() {
        let now = Instant::now();
        let cx = RequestContext::new().with_budget(Duration::from_millis(300));
        assert_eq!(cx.deadline(), Some(now + Duration::from_millis(300)));
        assert!(!cx.is_expired());
        let tighter = cx.clone().with_budget(Duration::from_millis(100));
        assert_eq!(tighter.deadline(), Some(now + Duration::from_millis(100)));
        let looser = tighter.with_budget(Duration::from_secs(5));
        assert_eq!(looser.deadline(), Some(now + Duration::from_millis(100)));
        // No deadline: never expired; a passed one: expired.
        assert!(!RequestContext::new().is_expired());
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(cx.is_expired());
        // The builders keep what was set before them.
        let cx = RequestContext::new()
            .with_request_id("keep-me")
            .with_budget(Duration::from_secs(1))
            .with_caller("edge")
            .with_cohort_key("u00042");
        assert_eq!(cx.request_id(), "keep-me");
        assert!(cx.deadline().is_some());
    }

    #[tokio::test]
    async fn caller_and_cohort_key_read_back_what_was_set() {
        let cx = RequestContext::new();
        assert_eq!(cx.caller(), None);
        assert_eq!(cx.cohort_key(), None);
        let cx = cx
            .with_request_id("rid-7")
            .with_caller("catalog")
            .with_cohort_key("u00042");
        assert_eq!(cx.caller(), Some("catalog"));
        assert_eq!(cx.cohort_key(), Some("u00042"));
        assert_eq!(cx.request_id(), "rid-7");
    }

    #[tokio::test]
    async fn a_propagated_header_set_twice_keeps_the_last_value_and_others_stay() {
        let a = HeaderName::from_static("x-fleet-a");
        let b = HeaderName::from_static("x-fleet-b");
        let cx = RequestContext::new()
            .with_request_id("rid-8")
            .with_propagated(a.clone(), HeaderValue::from_static("1"))
            .with_propagated(b.clone(), HeaderValue::from_static("2"))
            .with_propagated(a, HeaderValue::from_static("3"));
        assert_eq!(
            cx.propagated("x-fleet-a"),
            Some(&HeaderValue::from_static("3"))
        );
        assert_eq!(
            cx.propagated("x-fleet-b"),
            Some(&HeaderValue::from_static("2"))
        );
        assert_eq!(cx.request_id(), "rid-8");
        let mut h = HeaderMap::new();
        cx.write_headers(&mut h, None);
        assert_eq!(h.get_all("x-fleet-a").iter().count(), 1);
    }

    #[test]
    fn new_request_ids_are_distinct_uuids() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
        assert!(is_valid_request_id(&a));
    }
}
