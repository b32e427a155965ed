//! Carrying out one activity — HTTP, a process, or one of our own
//! providers — and checking a probe's output against its tolerance.
//!
//! Outputs have Chaos Toolkit's shapes, so tolerances mean the same as in
//! `chaos run`: HTTP `{"status", "headers", "body"}`, process (and our
//! own providers) `{"status": exit code, "stdout", "stderr"}`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::gameday::command::{
    AbsentIs, FleetCommand, Pick, ProbeLoadArgs, ProbePrometheusArgs, ProbeStatusArgs,
};
use crate::gameday::experiment::{HttpProvider, Provider, Tolerance};
use crate::gameday::target::{Chaos, Target, TargetError};
use crate::gameday::undo::{UndoLog, UndoStep};

/// Exit status of a probe whose figures breached its thresholds.
pub const EXIT_BREACHED: i64 = 99;

/// Why an activity failed (its journal entry says `failed` with this).
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    /// The target refused or failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// An HTTP call failed (no answer, or not the expected status).
    #[error("{0}")]
    Http(String),
    /// A process could not run or timed out.
    #[error("{0}")]
    Process(String),
    /// An admin API refused a change.
    #[error("{instance}: admin API answered {status}: {body}")]
    Admin {
        /// Instance id.
        instance: String,
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The load probe could not run.
    #[error("load probe: {0}")]
    Load(String),
}

/// What the in-process activities share: the target, the undo log, the
/// cohort's fault scope and an HTTP client.
#[derive(Clone, Debug)]
pub struct Context {
    /// The system under test.
    pub target: Target,
    /// What to undo when the run ends (or crashes).
    pub undo: Arc<UndoLog>,
    /// With `--experiment-cohort`: fault rules without `--header` get
    /// this one, so only the experiment cohort's requests feel them.
    pub fault_scope: Option<String>,
    /// For HTTP providers and admin calls.
    pub http: reqwest::Client,
}

/// Runs a provider; `Ok` is the output, `Err` a failed activity.
///
/// # Errors
/// [`ActivityError`].
pub async fn run_provider(provider: &Provider, cx: &Context) -> Result<Value, ActivityError> {
    match provider {
        Provider::Http(h) => http(h, &cx.http).await,
        Provider::Process {
            path,
            args,
            timeout,
        } => process(path, args, *timeout).await,
        Provider::Fleet { command, .. } => {
            let (status, stdout) = fleet(command, cx).await?;
            Ok(json!({"status": status, "stdout": stdout, "stderr": ""}))
        }
    }
}

async fn http(p: &HttpProvider, client: &reqwest::Client) -> Result<Value, ActivityError> {
    let method = reqwest::Method::from_bytes(p.method.as_bytes())
        .map_err(|e| ActivityError::Http(e.to_string()))?;
    let mut url =
        reqwest::Url::parse(&p.url).map_err(|e| ActivityError::Http(format!("{}: {e}", p.url)))?;
    if method == reqwest::Method::GET
        && let Some(Value::Object(o)) = &p.arguments
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in o {
            q.append_pair(k, &scalar(v));
        }
    }
    let mut req = client.request(method.clone(), url);
    let mut json_body = false;
    for (k, v) in &p.headers {
        if k.eq_ignore_ascii_case("content-type") && v.starts_with("application/json") {
            json_body = true;
        }
        req = req.header(k, v);
    }
    if let Some(args) = &p.arguments {
        if method == reqwest::Method::GET {
            // Sent as the query string (above).
        } else if json_body {
            req = req.body(serde_json::to_vec(args).unwrap_or_default());
        } else if let Value::Object(o) = args {
            let pairs: Vec<(String, String)> =
                o.iter().map(|(k, v)| (k.clone(), scalar(v))).collect();
            let form = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form);
        }
    }
    if let Some(t) = p.timeout {
        req = req.timeout(t);
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            ActivityError::Http("activity took too long to complete".into())
        } else {
            ActivityError::Http(format!("failed to connect to {}: {e}", p.url))
        }
    })?;
    let status = resp.status().as_u16();
    let headers: serde_json::Map<String, Value> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ActivityError::Http(format!("reading the answer of {}: {e}", p.url)))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = if is_json {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    } else {
        Value::String(text)
    };
    if let Some(want) = p.expected_status
        && want != status
    {
        return Err(ActivityError::Http(format!(
            "{} {} answered {status}, expected {want}: {}",
            p.method,
            p.url,
            truncate(&body.to_string(), 300)
        )));
    }
    Ok(json!({"status": status, "headers": headers, "body": body}))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_owned(),
    }
}

async fn process(
    path: &str,
    args: &[String],
    timeout: Option<Duration>,
) -> Result<Value, ActivityError> {
    let child = tokio::process::Command::new(path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match timeout {
        Some(t) => tokio::time::timeout(t, child).await.map_err(|_| {
            ActivityError::Process("process activity took too long to complete".into())
        })?,
        None => child.await,
    }
    .map_err(|e| ActivityError::Process(format!("cannot run {path}: {e}")))?;
    Ok(json!({
        "status": out.status.code().unwrap_or(-1),
        "stdout": String::from_utf8_lossy(&out.stdout),
        "stderr": String::from_utf8_lossy(&out.stderr),
    }))
}

/// Runs one of our own providers; returns (exit status, stdout JSON text).
/// Also what `fleet gameday <action>` runs on the command line.
///
/// # Errors
/// [`ActivityError`].
pub async fn fleet(cmd: &FleetCommand, cx: &Context) -> Result<(i64, String), ActivityError> {
    let out = match cmd {
        FleetCommand::FaultAdd(a) => {
            let mut spec = serde_json::Map::new();
            let action = match (&a.delay, &a.abort) {
                (Some(d), _) => json!({"type": "delay", "ms": d.as_millis().max(1) as u64}),
                (_, Some(code)) => json!({"type": "abort", "code": code}),
                _ => json!({"type": "hang"}),
            };
            spec.insert("action".into(), action);
            spec.insert("percent".into(), json!(a.percent));
            spec.insert("ttl_s".into(), json!(a.ttl.as_secs().max(1)));
            for (k, v) in [
                ("operation", &a.operation),
                ("caller", &a.caller),
                ("version", &a.scope.version),
            ] {
                if let Some(v) = v {
                    spec.insert(k.into(), json!(v));
                }
            }
            if let Some(h) = a.header.as_ref().or(cx.fault_scope.as_ref()) {
                spec.insert("header".into(), json!(h));
            }
            let token = cx.target.admin_token()?;
            let mut added = Vec::new();
            for (instance, admin) in cx.target.admin_urls(
                a.scope.service,
                a.scope.version.as_deref(),
                &a.scope.instances,
            )? {
                let resp = cx
                    .http
                    .post(format!("{admin}/admin/faults"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(Value::Object(spec.clone()).to_string())
                    .send()
                    .await
                    .map_err(|e| ActivityError::Http(format!("{instance}: {e}")))?;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if status != 201 {
                    return Err(ActivityError::Admin {
                        instance,
                        status,
                        body: body.to_string(),
                    });
                }
                let id = body.get("id").and_then(Value::as_u64).unwrap_or(0);
                cx.undo.push(UndoStep::RemoveFault {
                    instance: instance.clone(),
                    admin_url: admin.clone(),
                    id,
                });
                added.push(json!({"instance": instance, "id": id}));
            }
            json!({"rule": spec, "added": added})
        }
        FleetCommand::FaultClear(a) => {
            let token = cx.target.admin_token()?;
            let mut cleared = Vec::new();
            for (instance, admin) in
                cx.target
                    .admin_urls(a.service, a.version.as_deref(), &a.instances)?
            {
                let resp = cx
                    .http
                    .delete(format!("{admin}/admin/faults"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map_err(|e| ActivityError::Http(format!("{instance}: {e}")))?;
                let status = resp.status().as_u16();
                if status != 204 {
                    return Err(ActivityError::Admin {
                        instance,
                        status,
                        body: resp.text().await.unwrap_or_default(),
                    });
                }
                cleared.push(instance);
            }
            cx.undo.forget_faults(&cleared);
            json!({"cleared": cleared})
        }
        FleetCommand::Kill(a) | FleetCommand::Stop(a) | FleetCommand::Restart(a) => {
            let what = match cmd {
                FleetCommand::Kill(_) => Chaos::Kill,
                FleetCommand::Stop(_) => Chaos::Stop,
                _ => Chaos::Restart,
            };
            let done = cx
                .target
                .chaos(what, a.service, a.version.as_deref(), &a.instance, a.wait)
                .await?;
            if what == Chaos::Stop
                && cx.target.kind == crate::gameday::command::TargetKind::Compose
                && let Some(svc) = done.get("instance").and_then(Value::as_str)
            {
                cx.undo.push(UndoStep::ComposeStart {
                    service: svc.to_owned(),
                });
            }
            done
        }
        FleetCommand::Network(a) => {
            use crate::gameday::network as net;
            use fleet_supervisor::toxiproxy;
            let api = cx.target.toxiproxy_api()?;
            let fault = a.fault();
            // `--proxy ratings` is every ratings instance's proxy; an exact
            // name is that proxy alone.
            let known = toxiproxy::list_proxies(&cx.http, &api)
                .await
                .map_err(|e| ActivityError::Http(e.to_string()))?;
            let proxies = net::matching_proxies(&a.proxy, known.iter().map(String::as_str));
            if proxies.is_empty() {
                return Err(ActivityError::Http(format!(
                    "Toxiproxy has no proxy {0} or {0}-… (it has: {1})",
                    a.proxy,
                    known.join(", ")
                )));
            }
            let mut done = Vec::new();
            for proxy in proxies {
                match net::toxic_body(
                    &format!(
                        "gameday-{}-{}",
                        fault.kind(),
                        uuid::Uuid::new_v4()
                            .simple()
                            .to_string()
                            .get(..8)
                            .unwrap_or("0")
                    ),
                    &fault,
                    a.stream.name(),
                    a.toxicity,
                ) {
                    Some(body) => {
                        let toxic = body
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let created = toxiproxy::add_toxic(&cx.http, &api, &proxy, body)
                            .await
                            .map_err(|e| ActivityError::Http(e.to_string()))?;
                        cx.undo.push(UndoStep::RemoveToxic {
                            api: api.clone(),
                            proxy: proxy.clone(),
                            toxic,
                        });
                        done.push(json!({"proxy": proxy, "toxic": created}));
                    }
                    None => {
                        toxiproxy::set_enabled(&cx.http, &api, &proxy, false)
                            .await
                            .map_err(|e| ActivityError::Http(e.to_string()))?;
                        cx.undo.push(UndoStep::EnableProxy {
                            api: api.clone(),
                            proxy: proxy.clone(),
                        });
                        done.push(json!({"proxy": proxy, "enabled": false}));
                    }
                }
            }
            // One proxy: its own record, as before; several: the list.
            if done.len() == 1 {
                done.swap_remove(0)
            } else {
                json!({"proxies": done})
            }
        }
        FleetCommand::ProbeLoad(a) => return load_probe(a, cx).await,
        FleetCommand::ProbeStatus(a) => return status_probe(a, cx).await,
        FleetCommand::ProbePrometheus(a) => return prometheus_probe(a, cx).await,
    };
    Ok((0, out.to_string()))
}

async fn load_probe(a: &ProbeLoadArgs, cx: &Context) -> Result<(i64, String), ActivityError> {
    let url = cx.target.edge_url()?;
    let args = crate::load::LoadArgs {
        target: Some(url),
        service: None,
        rate: Some(a.rate.to_string()),
        duration: Some(format!("{}ms", a.duration.as_millis())),
        requests: None,
        warmup: format!("{}ms", a.warmup.as_millis()),
        ramp: "0s".into(),
        closed_loop: false,
        concurrency: 256,
        mix: Some(a.mix.clone()),
        zipf: "1.0".into(),
        titles: 1000,
        users: 500,
        timeout: format!("{}ms", a.timeout.as_millis()),
        seed: rand::random(),
        headers: Vec::new(),
        json: true,
        hgrm: None,
        hlog: None,
        csv: None,
        thresholds: a.thresholds.clone(),
        threshold_file: None,
        abort_on_fail: false,
        merge: Vec::new(),
    };
    let cfg = match args.into_command() {
        Ok(crate::load::LoadCommand::Run(cfg)) => cfg,
        Ok(crate::load::LoadCommand::Merge(_)) => {
            return Err(ActivityError::Load("not a load run".into()));
        }
        Err(e) => return Err(ActivityError::Load(e.to_string())),
    };
    let report = crate::load::run(&cfg)
        .await
        .map_err(|e| ActivityError::Load(e.to_string()))?;
    let figures = json!({
        "requests": report.completed + report.unsent,
        "ok": report.ok,
        "errors": report.failed + report.unsent,
        "success_percent": 100.0 - report.error_percent,
        "error_percent": report.error_percent,
        "p50_ms": report.response.p50_ms,
        "p90_ms": report.response.p90_ms,
        "p99_ms": report.response.p99_ms,
        "max_ms": report.response.max_ms,
        "statuses": report.statuses,
        "thresholds": report.thresholds,
        "passed": report.passed,
    });
    let status = if report.passed { 0 } else { EXIT_BREACHED };
    Ok((status, figures.to_string()))
}

async fn status_probe(a: &ProbeStatusArgs, cx: &Context) -> Result<(i64, String), ActivityError> {
    let give_up = tokio::time::Instant::now() + a.wait;
    let (ready, rows) = loop {
        // Read afresh each time: a restart changes the registry.
        let instances = cx.target.admin_urls(a.service, None, &Pick::All)?;
        let mut rows = Vec::new();
        let mut ready = 0usize;
        for (id, admin) in instances {
            let ok = matches!(
                cx.http
                    .get(format!("{admin}/readyz"))
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await,
                Ok(r) if r.status().as_u16() == 200
            );
            ready += usize::from(ok);
            rows.push(json!({"instance": id, "ready": ok}));
        }
        if ready >= a.min_ready || tokio::time::Instant::now() >= give_up {
            break (ready, rows);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = if ready >= a.min_ready { 0 } else { 1 };
    Ok((
        status,
        json!({"service": a.service.name(), "ready": ready, "instances": rows}).to_string(),
    ))
}

/// One instant query: `GET /api/v1/query?query=…`. Returns the largest
/// sample value of the result (`None`: no series) and the number of series.
async fn prometheus_query(
    http: &reqwest::Client,
    base: &str,
    query: &str,
) -> Result<(Option<f64>, usize), ActivityError> {
    let url = format!("{base}/api/v1/query?query={}", urlencode(query));
    let r = http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| ActivityError::Http(format!("prometheus at {base}: {e}")))?;
    let status = r.status().as_u16();
    let body: Value = r
        .json()
        .await
        .map_err(|e| ActivityError::Http(format!("prometheus answered {status}: {e}")))?;
    if body.get("status").and_then(Value::as_str) != Some("success") {
        return Err(ActivityError::Http(format!(
            "prometheus refused the query ({status}): {}",
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
        )));
    }
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    // A sample is [unix time, "value"]; values are strings ("NaN", "+Inf"
    // included).
    let sample = |v: &Value| -> Option<f64> { v.get(1)?.as_str()?.parse::<f64>().ok() };
    Ok(match data.get("resultType").and_then(Value::as_str) {
        Some("scalar") => (data.get("result").and_then(sample), 1),
        Some("vector") => {
            let series = data
                .get("result")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let max = series
                .iter()
                .filter_map(|s| s.get("value").and_then(sample))
                .filter(|v| !v.is_nan())
                .reduce(f64::max);
            (max, series.len())
        }
        other => {
            return Err(ActivityError::Http(format!(
                "prometheus answered a {} result; the probe takes a scalar or an instant vector",
                other.unwrap_or("missing")
            )));
        }
    })
}

async fn prometheus_probe(
    a: &ProbePrometheusArgs,
    cx: &Context,
) -> Result<(i64, String), ActivityError> {
    let base = cx.target.prometheus_url();
    let give_up = tokio::time::Instant::now() + a.wait;
    loop {
        let (value, series) = prometheus_query(&cx.http, &base, &a.query).await?;
        let pass = match value {
            None => a.absent == AbsentIs::Pass,
            Some(v) => a.min.is_none_or(|lo| v >= lo) && a.max.is_none_or(|hi| v <= hi),
        };
        if pass || tokio::time::Instant::now() >= give_up {
            let out = json!({
                "query": a.query,
                "value": value,
                "series": series,
                "min": a.min,
                "max": a.max,
                "passed": pass,
            });
            return Ok((i64::from(!pass), out.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether `output` is within `tolerance` (Chaos Toolkit's rules).
pub fn within(tolerance: &Tolerance, output: &Value) -> bool {
    let status = output.get("status");
    match tolerance {
        Tolerance::Bool(b) => output.as_bool() == Some(*b),
        Tolerance::Str(s) => output.as_str() == Some(s.as_str()),
        Tolerance::Int(i) => match status {
            Some(st) if output.is_object() => st.as_i64() == Some(*i),
            _ => output.as_i64() == Some(*i),
        },
        Tolerance::List(list) => {
            if let (Some(st), true) = (status, output.is_object()) {
                return list.contains(st);
            }
            if let ([lo, hi], Some(x)) = (list.as_slice(), output.as_f64())
                && let (Some(lo), Some(hi)) = (lo.as_f64(), hi.as_f64())
            {
                return lo <= x && x <= hi;
            }
            list.contains(output)
        }
        Tolerance::Regex { pattern, target } => {
            let v = target
                .as_deref()
                .and_then(|t| output.get(t))
                .unwrap_or(output);
            match v {
                Value::String(s) => pattern.is_match(s),
                other => pattern.is_match(&other.to_string()),
            }
        }
        Tolerance::Range { lo, hi, target } => {
            let v = target
                .as_deref()
                .and_then(|t| output.get(t))
                .unwrap_or(output);
            v.as_f64().is_some_and(|x| *lo <= x && x <= *hi)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_follow_chaos_toolkit() {
        let http = json!({"status": 200, "body": "ok then"});
        assert!(within(&Tolerance::Int(200), &http));
        assert!(!within(&Tolerance::Int(503), &http));
        assert!(within(
            &Tolerance::List(vec![json!(200), json!(204)]),
            &http
        ));
        assert!(!within(
            &Tolerance::List(vec![json!(500), json!(503)]),
            &http
        ));
        assert!(within(
            &Tolerance::List(vec![json!(1), json!(10)]),
            &json!(7)
        ));
        assert!(!within(
            &Tolerance::List(vec![json!(1), json!(10)]),
            &json!(11)
        ));
        assert!(within(&Tolerance::Bool(true), &json!(true)));
        assert!(!within(&Tolerance::Bool(true), &json!(false)));
        assert!(within(&Tolerance::Str("x".into()), &json!("x")));
        let rx = Tolerance::Regex {
            pattern: regex::Regex::new("ok").unwrap(),
            target: Some("body".into()),
        };
        assert!(within(&rx, &http));
        assert!(!within(&rx, &json!({"status": 200, "body": "nope"})));
        let range = Tolerance::Range {
            lo: 0.0,
            hi: 5.0,
            target: Some("status".into()),
        };
        assert!(within(&range, &json!({"status": 0})));
        assert!(!within(&range, &json!({"status": 99})));
    }

    #[test]
    fn form_values_are_url_encoded() {
        assert_eq!(urlencode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
