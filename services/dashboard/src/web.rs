//! The dashboard's HTTP side: the page (embedded, no build step, no CDN),
//! its one-second feed, and `/turbine.stream`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::aggregate::aggregate;
use crate::collector::Hub;
use crate::view::{View, by_name};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Turbine's default sampling delay.
const DEFAULT_DELAY_MS: u64 = 500;

/// What the handlers read.
#[derive(Clone)]
pub struct WebState {
    /// The instances' data.
    pub hub: Hub,
    /// The newest view.
    pub view: watch::Receiver<Arc<View>>,
    /// Cancelled at shutdown: open streams end, so the server can stop.
    pub stop: CancellationToken,
    /// Required by the data routes when set ([`crate::Config::viewer_token`]).
    pub viewer_token: Option<fleet_config::Secret>,
}

/// Every route of the dashboard: the page and its assets (static, no
/// data) and `/healthz` open, the data behind the viewer token.
pub fn router(state: WebState) -> Router {
    let data = Router::new()
        .route("/api/view", get(view_json))
        .route("/dashboard.stream", get(dashboard_stream))
        .route("/turbine.stream", get(turbine_stream))
        .layer(axum::middleware::from_fn_with_state(
            state.viewer_token.clone(),
            require_viewer,
        ));
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .merge(data)
        .with_state(state)
}

/// The viewer token as `Authorization: Bearer` or `?access_token=`
/// (EventSource cannot send headers), compared in constant time.
async fn require_viewer(
    State(token): State<Option<fleet_config::Secret>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let given = fleet_config::presented_credential(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        req.uri().query(),
    );
    if given.is_some_and(|g| token.matches(g.as_bytes())) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {
                "code": "unauthorized",
                "message": "missing or wrong viewer token (Authorization: Bearer <token>, or ?access_token=)",
                "request_id": "",
            }})),
        )
            .into_response()
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn bad_request(code: &str, message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {"code": code, "message": message, "request_id": ""}})),
    )
        .into_response()
}

async fn view_json(State(s): State<WebState>) -> Response {
    let view = s.view.borrow().clone();
    axum::Json((*view).clone()).into_response()
}

/// One event per new view (once a second).
async fn dashboard_stream(State(s): State<WebState>) -> Response {
    let rx = s.view.clone();
    let events = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let view = rx.borrow_and_update().clone();
        let data = serde_json::to_string(&*view).unwrap_or_else(|_| "{}".to_owned());
        Some((
            Ok::<_, Infallible>(Event::default().data(data)),
            (rx, false),
        ))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `/turbine.stream[?cluster=<service>][&delay=<ms>]`: every instance's
/// Hystrix objects aggregated by `(type, name)`, Turbine's way.
async fn turbine_stream(
    State(s): State<WebState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let delay = match q.get("delay") {
        None => Duration::from_millis(DEFAULT_DELAY_MS),
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(ms) if (100..=60_000).contains(&ms) => Duration::from_millis(ms),
            _ => {
                return bad_request(
                    "invalid_delay",
                    format!("delay must be whole milliseconds from 100 to 60000, got {raw:?}"),
                );
            }
        },
    };
    let cluster = q.get("cluster").filter(|c| !c.is_empty()).cloned();
    let mut interval = tokio::time::interval(delay);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (hub, stop) = (s.hub, s.stop);
    let body = futures::stream::unfold(interval, move |mut interval| {
        let hub = hub.clone();
        let cluster = cluster.clone();
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = interval.tick() => {}
                () = stop.cancelled() => return None,
            }
            let chunk = turbine_sample(&hub, cluster.as_deref());
            Some((Ok::<_, Infallible>(chunk), interval))
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream;charset=UTF-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One Turbine sample: an aggregated object per `(type, name)`, then a ping.
pub fn turbine_sample(hub: &Hub, cluster: Option<&str>) -> Bytes {
    let states = hub.states();
    let mut out = String::new();
    for kind in ["HystrixCommand", "HystrixThreadPool"] {
        for objects in by_name(&states, kind, cluster).values() {
            if let Some(agg) = aggregate(objects.iter().copied()) {
                out.push_str("data: ");
                out.push_str(&agg.to_string());
                out.push_str("\n\n");
            }
        }
    }
    out.push_str("ping: \n\n");
    Bytes::from(out)
}
