//! The report a person reads: one self-contained HTML page (inline CSS and
//! SVG, no scripts, nothing fetched) with the verdict, the timeline of the
//! method's activities and the rollbacks drawn over the monitor's success
//! rate and p99 charts (control and experiment side by side), the steady
//! state checks and the activity table. Built from the journal alone.

use std::fmt::Write as _;

use serde_json::Value;

const W: f64 = 900.0;
const H: f64 = 220.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 14.0;
const PAD_B: f64 = 28.0;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(cohort: &str) -> &'static str {
    match cohort {
        "experiment" => "#d9480f",
        "control" => "#1c7ed6",
        _ => "#2b8a3e",
    }
}

/// The report for `journal`.
pub fn html(journal: &Value) -> String {
    let title = journal
        .pointer("/experiment/title")
        .and_then(Value::as_str)
        .unwrap_or("experiment");
    let status = journal.get("status").and_then(Value::as_str).unwrap_or("?");
    let deviated = journal
        .get("deviated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let held = status == "completed" && !deviated;
    let (verdict, class) = match (status, deviated) {
        ("completed", false) => ("Steady state held".to_owned(), "ok"),
        ("aborted", _) => (
            "Aborted automatically: steady state deviated".to_owned(),
            "bad",
        ),
        ("interrupted", _) => ("Interrupted (rolled back)".to_owned(), "warn"),
        (_, true) => ("Steady state deviated".to_owned(), "bad"),
        _ => (
            "Failed: steady state did not hold before the method".to_owned(),
            "bad",
        ),
    };
    let series: Vec<&Value> = journal
        .pointer("/fleet/series")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let timeline: Vec<&Value> = journal
        .pointer("/fleet/timeline")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let t_max = series
        .iter()
        .filter_map(|p| p.get("t").and_then(Value::as_f64))
        .chain(
            timeline
                .iter()
                .filter_map(|t| t.get("t_end").and_then(Value::as_f64)),
        )
        .fold(1.0_f64, f64::max)
        .ceil();

    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Game day: {t}</title><style>\
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#212529;max-width:960px}}\
h1{{font-size:22px;margin:0 0 4px}}h2{{font-size:16px;margin:24px 0 8px}}\
.verdict{{padding:12px 16px;border-radius:6px;font-size:18px;font-weight:600;margin:12px 0}}\
.ok{{background:#d3f9d8;color:#2b8a3e}}.bad{{background:#ffe3e3;color:#c92a2a}}.warn{{background:#fff3bf;color:#e67700}}\
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #dee2e6;padding:4px 6px;text-align:left;font-size:13px}}\
.muted{{color:#868e96}}svg{{background:#f8f9fa;border-radius:4px}}.legend span{{margin-right:14px}}\
</style></head><body>",
        t = esc(title)
    );
    let _ = write!(
        page,
        "<h1>Game day: {}</h1><div class=\"muted\">{} — {} · {:.1} s · target {}</div>",
        esc(title),
        esc(journal.get("start").and_then(Value::as_str).unwrap_or("")),
        esc(journal.get("end").and_then(Value::as_str).unwrap_or("")),
        journal
            .get("duration")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        esc(journal
            .pointer("/fleet/target")
            .and_then(Value::as_str)
            .unwrap_or("?")),
    );
    let _ = write!(
        page,
        "<div class=\"verdict {class}\" id=\"verdict\">{} — status <b>{}</b>, deviated <b>{}</b></div>",
        esc(&verdict),
        esc(status),
        deviated
    );
    if let Some(a) = journal.pointer("/fleet/abort").filter(|a| !a.is_null()) {
        let _ = write!(
            page,
            "<p><b>Abort:</b> {} — deviation from {:.1} s, detected at {:.1} s, rollback done at {:.1} s: <b>{:.2} s</b> from deviation to rollback done.</p>",
            esc(a.get("detail").and_then(Value::as_str).unwrap_or("")),
            a.get("deviation_started_t")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            a.get("detected_t").and_then(Value::as_f64).unwrap_or(0.0),
            a.get("rollback_done_t")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            a.get("abort_latency_s")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        );
    }
    if let Some(c) = journal.pointer("/fleet/cohort").filter(|c| !c.is_null()) {
        let _ = write!(
            page,
            "<p>Cohorts: experiment and control, {}% of users each; faults scoped to <code>{}</code>.</p>",
            c.get("percent").and_then(Value::as_f64).unwrap_or(0.0),
            esc(c.get("scope").and_then(Value::as_str).unwrap_or(""))
        );
    }

    let cohorts: Vec<&str> = {
        let mut c: Vec<&str> = series
            .iter()
            .filter_map(|p| p.get("cohort").and_then(Value::as_str))
            .collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    page.push_str("<h2>Success rate and latency, with the timeline</h2>");
    if series.is_empty() {
        page.push_str("<p class=\"muted\">No live monitor in this experiment (add the <code>fleet</code> extension's <code>monitor</code>, or run with <code>--experiment-cohort</code>).</p>");
    } else {
        page.push_str("<div class=\"legend\">");
        for c in &cohorts {
            let _ = write!(
                page,
                "<span style=\"color:{}\">■ {}</span>",
                colour(c),
                esc(c)
            );
        }
        page.push_str("<span style=\"color:#ae3ec9\">▮ method activity</span><span style=\"color:#495057\">▮ rollback</span></div>");
    }
    page.push_str(&chart(
        "success-chart",
        "success %",
        &series,
        &cohorts,
        "success_percent",
        &timeline,
        t_max,
        Some(100.0),
    ));
    page.push_str(&chart(
        "p99-chart",
        "p99 ms",
        &series,
        &cohorts,
        "p99_ms",
        &timeline,
        t_max,
        None,
    ));

    page.push_str("<h2>Timeline</h2><table><tr><th>kind</th><th>activity</th><th>from</th><th>to</th><th>status</th></tr>");
    for t in &timeline {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{:.2} s</td><td>{:.2} s</td><td>{}</td></tr>",
            esc(t.get("kind").and_then(Value::as_str).unwrap_or("")),
            esc(t.get("name").and_then(Value::as_str).unwrap_or("")),
            t.get("t_start").and_then(Value::as_f64).unwrap_or(0.0),
            t.get("t_end").and_then(Value::as_f64).unwrap_or(0.0),
            esc(t.get("status").and_then(Value::as_str).unwrap_or("")),
        );
    }
    page.push_str("</table>");

    page.push_str("<h2>Steady state</h2><table><tr><th>when</th><th>probe</th><th>status</th><th>within tolerance</th></tr>");
    for when in ["before", "after"] {
        let probes = journal
            .pointer(&format!("/steady_states/{when}/probes"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if probes.is_empty() {
            let _ = write!(
                page,
                "<tr><td>{when}</td><td class=\"muted\" colspan=\"3\">not checked</td></tr>"
            );
        }
        for p in probes {
            let _ = write!(
                page,
                "<tr><td>{when}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(p
                    .pointer("/activity/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")),
                esc(p.get("status").and_then(Value::as_str).unwrap_or("")),
                match p.get("tolerance_met").and_then(Value::as_bool) {
                    Some(true) => "yes",
                    Some(false) => "<b>no</b>",
                    None => "",
                }
            );
        }
    }
    page.push_str("</table>");
    let _ = write!(
        page,
        "<p class=\"muted\">Journal in Chaos Toolkit's shape (chaoslib {}); verdict: {}.</p></body></html>",
        esc(journal
            .get("chaoslib-version")
            .and_then(Value::as_str)
            .unwrap_or("")),
        if held { "pass" } else { "fail" }
    );
    page
}

#[allow(clippy::too_many_arguments)]
fn chart(
    id: &str,
    label: &str,
    series: &[&Value],
    cohorts: &[&str],
    field: &str,
    timeline: &[&Value],
    t_max: f64,
    fixed_max: Option<f64>,
) -> String {
    if series.is_empty() {
        return String::new();
    }
    let y_max = fixed_max.unwrap_or_else(|| {
        let m = series
            .iter()
            .filter_map(|p| p.get(field).and_then(Value::as_f64))
            .fold(1.0_f64, f64::max);
        nice(m * 1.1)
    });
    let x = |t: f64| PAD_L + (W - PAD_L - PAD_R) * (t / t_max);
    let y = |v: f64| PAD_T + (H - PAD_T - PAD_B) * (1.0 - (v / y_max).clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg id=\"{id}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{label}\">"
    );
    // Activity spans first, under the lines.
    for t in timeline {
        let (Some(a), Some(b)) = (
            t.get("t_start").and_then(Value::as_f64),
            t.get("t_end").and_then(Value::as_f64),
        ) else {
            continue;
        };
        let rollback = t.get("kind").and_then(Value::as_str) == Some("rollback");
        let fill = if rollback { "#495057" } else { "#ae3ec9" };
        let w = (x(b) - x(a)).max(2.0);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{PAD_T}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{fill}\" fill-opacity=\"0.18\"><title>{}</title></rect>",
            x(a),
            H - PAD_T - PAD_B,
            esc(t.get("name").and_then(Value::as_str).unwrap_or(""))
        );
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{PAD_T}\" y2=\"{1:.1}\" stroke=\"{fill}\" stroke-width=\"1.5\"/>",
            x(a),
            H - PAD_B
        );
    }
    // Axes and grid.
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{PAD_L}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#dee2e6\"/><text x=\"{2:.1}\" y=\"{3:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#495057\">{4}</text>",
            W - PAD_R,
            y(v),
            PAD_L - 6.0,
            y(v) + 4.0,
            fmt_num(v)
        );
    }
    let step = nice(t_max / 8.0).max(1.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#495057\">{}s</text>",
            x(t),
            H - 8.0,
            fmt_num(t)
        );
        t += step;
    }
    let _ = write!(
        s,
        "<text x=\"12\" y=\"{:.1}\" font-size=\"11\" fill=\"#495057\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        H / 2.0,
        H / 2.0,
        esc(label)
    );
    for c in cohorts {
        let pts: Vec<String> = series
            .iter()
            .filter(|p| p.get("cohort").and_then(Value::as_str) == Some(c))
            .filter_map(|p| {
                Some(format!(
                    "{:.1},{:.1}",
                    x(p.get("t")?.as_f64()?),
                    y(p.get(field)?.as_f64()?)
                ))
            })
            .collect();
        let _ = write!(
            s,
            "<polyline class=\"series\" data-cohort=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            esc(c),
            colour(c),
            pts.join(" ")
        );
    }
    s.push_str("</svg>");
    s
}

fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    let f = v / mag;
    let n = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * mag
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_report_draws_both_cohorts_the_timeline_and_the_verdict() {
        let j = json!({
            "experiment": {"title": "slow <canary>"},
            "status": "aborted", "deviated": true, "duration": 9.5,
            "start": "s", "end": "e", "chaoslib-version": "1.44.0",
            "steady_states": {"before": {"probes": [{"activity": {"name": "home ok"}, "status": "succeeded", "tolerance_met": true}]}},
            "fleet": {
                "target": "embedded",
                "series": [
                    {"t": 1.0, "cohort": "control", "success_percent": 100.0, "p99_ms": 10.0},
                    {"t": 2.0, "cohort": "control", "success_percent": 100.0, "p99_ms": 12.0},
                    {"t": 1.0, "cohort": "experiment", "success_percent": 100.0, "p99_ms": 11.0},
                    {"t": 2.0, "cohort": "experiment", "success_percent": 40.0, "p99_ms": 900.0}
                ],
                "timeline": [
                    {"kind": "method", "name": "hang catalog", "t_start": 0.5, "t_end": 0.6, "status": "succeeded"},
                    {"kind": "rollback", "name": "remove fault rule 1", "t_start": 2.5, "t_end": 2.6, "status": "succeeded"}
                ],
                "abort": {"detail": "experiment errors 60%", "deviation_started_t": 1.0, "detected_t": 2.0, "rollback_done_t": 2.6, "abort_latency_s": 1.6}
            }
        });
        let page = html(&j);
        assert!(
            page.contains("Game day: slow &lt;canary&gt;"),
            "escaped title"
        );
        assert!(!page.contains("<canary>"));
        assert!(page.contains("class=\"verdict bad\""));
        assert!(page.contains("Aborted automatically"));
        assert!(page.contains("<b>1.60 s</b> from deviation to rollback done"));
        assert_eq!(
            page.matches("<polyline class=\"series\"").count(),
            4,
            "2 cohorts × 2 charts"
        );
        assert!(page.contains("data-cohort=\"experiment\""));
        assert!(page.contains("<title>hang catalog</title>"));
        assert!(page.contains("<title>remove fault rule 1</title>"));
        assert!(!page.contains("<script"), "self-contained, no scripts");
        assert!(
            !page.contains("http://") || page.matches("http://").count() == 2,
            "only the SVG namespace"
        );
    }

    #[test]
    fn axis_steps_are_round() {
        assert!((nice(7.3) - 10.0).abs() < 1e-9);
        assert!((nice(0.9) - 1.0).abs() < 1e-9);
        assert!((nice(130.0) - 200.0).abs() < 1e-9);
    }
}
