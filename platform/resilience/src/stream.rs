//! `/admin/stream`: one-second snapshots as server-sent events.
//!
//! The Hystrix stream idea. Every second the endpoint sends one event per
//! dependency operation of this instance:
//!
//! ```text
//! event: dependency
//! data: {"dependency":"dal","operation":"GetTitle","window_s":10,
//!        "requests":…,"successes":…,"errors":…,"timeouts":…,
//!        "rejections":…,"short_circuits":…,"slow":…,"retries":…,
//!        "error_percent":…,"rate_per_s":…,
//!        "latency_ms":{"p50":…,"p90":…,"p99":…,"max":…},
//!        "circuit":"closed|open|half_open",
//!        "bulkhead":{"in_use":…,"limit":…},
//!        "instances":[{"instance":…,"pending":…,"ewma_ms":…,"ejected":…}],
//!        "service":…,"version":…,"instance_id":…,"time_ms":…}
//! ```
//!
//! followed by one `event: meta` with the instance's identity and the
//! number of operations reported (so an instance with no dependencies still
//! shows it is alive). Counts cover the rolling 10 s window; `rate_per_s`
//! is requests per second over that window.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::Value;

/// Who is reporting, stamped on every event.
#[derive(Clone, Debug)]
pub struct StreamIdentity {
    /// Service name.
    pub service: String,
    /// Version.
    pub version: String,
    /// Instance id.
    pub instance_id: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Builds the events of one tick.
pub fn tick_events(identity: &StreamIdentity, snapshots: Vec<Value>) -> Vec<Event> {
    let time_ms = now_ms();
    let count = snapshots.len();
    let mut out: Vec<Event> = snapshots
        .into_iter()
        .map(|mut v| {
            if let Value::Object(m) = &mut v {
                m.insert("service".into(), identity.service.clone().into());
                m.insert("version".into(), identity.version.clone().into());
                m.insert("instance_id".into(), identity.instance_id.clone().into());
                m.insert("time_ms".into(), time_ms.into());
            }
            Event::default().event("dependency").data(v.to_string())
        })
        .collect();
    let meta = serde_json::json!({
        "service": identity.service,
        "version": identity.version,
        "instance_id": identity.instance_id,
        "time_ms": time_ms,
        "operations": count,
    });
    out.push(Event::default().event("meta").data(meta.to_string()));
    out
}

/// The SSE response: `snapshots` is called every `interval`. `guard`
/// lives as long as the stream (a subscriber slot, released when the
/// client goes away).
pub fn sse<F, G>(
    identity: StreamIdentity,
    interval: Duration,
    snapshots: F,
    guard: G,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Vec<Value> + Send + Sync + 'static,
    G: Send + 'static,
{
    let ticks = futures::stream::unfold(
        (tokio::time::interval(interval), identity, snapshots, guard),
        |(mut interval, identity, snapshots, guard)| async move {
            interval.tick().await;
            let events = tick_events(&identity, snapshots());
            Some((events, (interval, identity, snapshots, guard)))
        },
    );
    let events = futures::StreamExt::flat_map(ticks, |events| {
        futures::stream::iter(events.into_iter().map(Ok))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_identity_and_a_meta_event() {
        let id = StreamIdentity {
            service: "catalog".into(),
            version: "1.3.0".into(),
            instance_id: "c1".into(),
        };
        let events = tick_events(&id, vec![serde_json::json!({"dependency":"dal"})]);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn events_are_stamped_with_the_wall_clock() {
        let ms =
            |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let before = ms(std::time::SystemTime::now());
        let stamped = u128::from(now_ms());
        let after = ms(std::time::SystemTime::now());
        assert!(
            before <= stamped && stamped <= after,
            "{before} {stamped} {after}"
        );
    }
}
