//! What a test reads from, or sets on, a running instance's admin port.

use std::net::SocketAddr;
use std::time::Duration;

/// `/readyz`'s status code; 0 when nothing answers.
pub async fn readyz(admin: SocketAddr) -> u16 {
    readyz_body(admin).await.0
}

/// `/readyz`'s status code and body (within 2 s); `(0, error)` when
/// nothing answers.
pub async fn readyz_body(admin: SocketAddr) -> (u16, String) {
    let sent = reqwest::Client::new()
        .get(format!("http://{admin}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    match sent {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// `/readyz`: its status and how many rounds of checks have run so far
/// (so a test can tell readiness was re-evaluated, not just cached).
///
/// # Panics
/// When the body carries no `rounds`.
pub async fn readyz_rounds(admin: SocketAddr) -> (u16, u64) {
    let (status, body) = readyz_body(admin).await;
    let rounds = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["rounds"].as_u64())
        .unwrap_or_else(|| panic!("no rounds in {body}"));
    (status, rounds)
}

/// Asserts `/readyz` answers 200 through at least `n` more rounds of
/// checks.
///
/// # Panics
/// When it answers anything else on the way.
pub async fn stays_ready(admin: SocketAddr, n: u64) {
    let (status, start) = readyz_rounds(admin).await;
    assert_eq!(status, 200, "ready to begin with");
    loop {
        let (status, rounds) = readyz_rounds(admin).await;
        assert_eq!(status, 200, "turned unready after {rounds} rounds");
        if rounds >= start + n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `/readyz` answers 503 with `reason` in its body, then
/// asserts `/healthz` still answers 200: alive, just not ready.
///
/// # Panics
/// When it does not turn unready within 5 s, or is not alive.
pub async fn unready_but_alive(admin: SocketAddr, reason: &str) {
    wait_for("/readyz answers 503", async || readyz(admin).await == 503).await;
    let (_, body) = readyz_body(admin).await;
    assert!(body.contains(reason), "/readyz without {reason:?}: {body}");
    let healthz = reqwest::get(format!("http://{admin}/healthz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_default();
    assert_eq!(healthz, 200, "alive, just not ready");
}

/// Waits until `/readyz` answers 200, then asserts it stays so through
/// at least `n` more rounds of checks.
///
/// # Panics
/// When it does not turn ready within 5 s, or turns unready.
pub async fn ready_and_stays(admin: SocketAddr, n: u64) {
    wait_for("/readyz answers 200", async || readyz(admin).await == 200).await;
    stays_ready(admin, n).await;
}

/// Polls `f` until it holds (at most 5 s).
///
/// # Panics
/// When it does not hold within 5 s.
pub async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..250 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not reached within 5 s");
}

/// The Prometheus text of an instance.
///
/// # Panics
/// When its admin port does not answer.
pub async fn metrics(admin: SocketAddr) -> String {
    let r = reqwest::get(format!("http://{admin}/metrics")).await;
    match r {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => panic!("{admin}/metrics: {e}"),
    }
}

/// The sum of every sample of `family` in Prometheus `text` whose labels
/// contain all of `labels` (e.g. `["cache=\"titles\"", "result=\"hit\""]`).
pub fn metric_sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Adds a fault rule (JSON) on an instance's admin port with its admin
/// `token`; returns the rule's id.
///
/// # Panics
/// When the instance refuses the rule.
pub async fn add_fault(admin: SocketAddr, token: &str, rule: &str) -> u64 {
    let sent = reqwest::Client::new()
        .post(format!("http://{admin}/admin/faults"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(rule.to_owned())
        .send()
        .await;
    let r = match sent {
        Ok(r) => r,
        Err(e) => panic!("{admin}/admin/faults: {e}"),
    };
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 201, "fault refused: {body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_u64())
        .unwrap_or_else(|| panic!("no id in {body}"))
}
