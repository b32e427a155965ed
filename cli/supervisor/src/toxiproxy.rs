//! The Toxiproxy HTTP API (2.x), as far as fleet uses it.
//!
//! `fleet up --toxiproxy` creates proxies in front of the stores, Consul
//! and (with static discovery) every gRPC instance ([`create_proxy`]); the
//! game-day runner adds and removes toxics and disables proxies on them.
//!
//! `POST /proxies/{p}/toxics` `{name, type, stream, toxicity,
//! attributes}`; `DELETE /proxies/{p}/toxics/{t}`; `POST /proxies/{p}`
//! `{"enabled": false|true}`; `POST /proxies` `{name, listen, upstream,
//! enabled}` answers the bound `listen` address; `GET /proxies`.

use std::time::Duration;

use serde_json::{Value, json};

/// Why a Toxiproxy call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToxiproxyError {
    /// No answer.
    #[error("toxiproxy at {api}: {message}")]
    Unreachable {
        /// The API base URL.
        api: String,
        /// Why.
        message: String,
    },
    /// It refused.
    #[error("toxiproxy {what} answered {status}: {body}")]
    Refused {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
}

/// `127.0.0.1:8474` → `http://127.0.0.1:8474`, without a trailing `/`.
pub fn normalize_url(u: &str) -> String {
    let u = u.trim().trim_end_matches('/');
    if u.starts_with("http://") || u.starts_with("https://") {
        u.to_owned()
    } else {
        format!("http://{u}")
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
    what: &str,
    ok: &[u16],
) -> Result<Value, ToxiproxyError> {
    let mut req = http.request(method, &url).timeout(Duration::from_secs(5));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.map_err(|e| ToxiproxyError::Unreachable {
        api: url.clone(),
        message: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    if !ok.contains(&status) {
        return Err(ToxiproxyError::Refused {
            what: what.to_owned(),
            status,
            body: text,
        });
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Adds a toxic to `proxy`.
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn add_toxic(
    http: &reqwest::Client,
    api: &str,
    proxy: &str,
    body: Value,
) -> Result<Value, ToxiproxyError> {
    call(
        http,
        reqwest::Method::POST,
        format!("{api}/proxies/{proxy}/toxics"),
        Some(body),
        &format!("add toxic on {proxy}"),
        &[200, 201],
    )
    .await
}

/// Removes a toxic (gone already counts as done).
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn remove_toxic(
    http: &reqwest::Client,
    api: &str,
    proxy: &str,
    toxic: &str,
) -> Result<(), ToxiproxyError> {
    call(
        http,
        reqwest::Method::DELETE,
        format!("{api}/proxies/{proxy}/toxics/{toxic}"),
        None,
        &format!("remove toxic {toxic} on {proxy}"),
        &[200, 204, 404],
    )
    .await
    .map(drop)
}

/// Enables or disables a proxy.
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn set_enabled(
    http: &reqwest::Client,
    api: &str,
    proxy: &str,
    enabled: bool,
) -> Result<(), ToxiproxyError> {
    call(
        http,
        reqwest::Method::POST,
        format!("{api}/proxies/{proxy}"),
        Some(json!({"enabled": enabled})),
        &format!("enable={enabled} {proxy}"),
        &[200],
    )
    .await
    .map(drop)
}

/// (Re)creates proxy `name` in front of `upstream`, listening on a free
/// loopback port; returns the address it listens on.
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn create_proxy(
    http: &reqwest::Client,
    api: &str,
    name: &str,
    upstream: &str,
) -> Result<String, ToxiproxyError> {
    call(
        http,
        reqwest::Method::DELETE,
        format!("{api}/proxies/{name}"),
        None,
        &format!("delete proxy {name}"),
        &[200, 204, 404],
    )
    .await?;
    let created = call(
        http,
        reqwest::Method::POST,
        format!("{api}/proxies"),
        Some(json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": true})),
        &format!("create proxy {name}"),
        &[200, 201],
    )
    .await?;
    created
        .get("listen")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ToxiproxyError::Refused {
            what: format!("create proxy {name}"),
            status: 201,
            body: created.to_string(),
        })
}

/// The names of every proxy Toxiproxy has (`GET /proxies`).
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn list_proxies(
    http: &reqwest::Client,
    api: &str,
) -> Result<Vec<String>, ToxiproxyError> {
    let all = call(
        http,
        reqwest::Method::GET,
        format!("{api}/proxies"),
        None,
        "list proxies",
        &[200],
    )
    .await?;
    Ok(all
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}
