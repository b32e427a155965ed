//! Thresholds: pass/fail conditions on a run's figures, for CI and game
//! days.
//!
//! Grammar: `[OP:]METRIC CMP VALUE`, where
//! * `OP` scopes it to one operation of the mix (`title:p99<20ms`);
//! * `METRIC` is `pNN[.N]`, `max`, `mean` or `min` of response time,
//!   the same prefixed `service.` for service time, `errors` (failed plus
//!   unsent requests), `rate` (answers per second) or `late` (sends over
//!   1 ms late);
//! * `CMP` is `<`, `<=`, `>` or `>=`;
//! * `VALUE` is a time with its unit (`us`, `ms`, `s`) for latencies, a
//!   count or a percentage (`0.1%`) for `errors` and `late`, requests per
//!   second for `rate`.

use std::fmt;

use hdrhistogram::Histogram;

use crate::load::figures::{Figures, ms};

/// A threshold that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{text:?}: {reason} (e.g. p99<50ms, errors<0.1%, title:p99.9<=200ms, rate>=95)")]
pub struct ThresholdError {
    text: String,
    reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stat {
    Quantile(f64),
    Max,
    Mean,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Metric {
    Response(Stat),
    Service(Stat),
    Errors { percent: bool },
    Late { percent: bool },
    Rate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// One pass/fail condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    text: String,
    scope: Option<String>,
    metric: Metric,
    cmp: Cmp,
    /// In ms for latencies, percent or count for errors/late, req/s for rate.
    limit: f64,
}

/// A threshold's outcome.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The threshold as given.
    pub threshold: String,
    /// The measured value (ms, %, count or req/s as in the threshold);
    /// `None` when there was nothing to measure (which fails).
    pub value: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

impl Threshold {
    /// Parses one threshold.
    ///
    /// # Errors
    /// [`ThresholdError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, ThresholdError> {
        let err = |reason: &str| ThresholdError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (scope, rest) = match compact.split_once(':') {
            Some((s, r)) => {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_lowercase()) {
                    return Err(err("the operation before ':' must be a name like title"));
                }
                (Some(s.to_owned()), r)
            }
            None => (None, compact.as_str()),
        };
        let at = rest
            .find(['<', '>'])
            .ok_or_else(|| err("no comparison (<, <=, >, >=)"))?;
        let (lhs, ops) = rest.split_at(at);
        let (cmp, rhs) = if let Some(r) = ops.strip_prefix("<=") {
            (Cmp::Le, r)
        } else if let Some(r) = ops.strip_prefix(">=") {
            (Cmp::Ge, r)
        } else if let Some(r) = ops.strip_prefix('<') {
            (Cmp::Lt, r)
        } else if let Some(r) = ops.strip_prefix('>') {
            (Cmp::Gt, r)
        } else {
            return Err(err("no comparison"));
        };
        let lhs = lhs.to_ascii_lowercase();
        let (metric, limit) = match lhs.as_str() {
            "errors" | "late" => {
                let (num, percent) = match rhs.strip_suffix('%') {
                    Some(n) => (n, true),
                    None => (rhs, false),
                };
                let v = number(num).ok_or_else(|| err("expected a count or a percentage"))?;
                if percent && v > 100.0 {
                    return Err(err("a percentage above 100"));
                }
                let m = if lhs == "errors" {
                    Metric::Errors { percent }
                } else {
                    Metric::Late { percent }
                };
                (m, v)
            }
            "rate" => {
                let num = rhs.strip_suffix("/s").unwrap_or(rhs);
                (
                    Metric::Rate,
                    number(num).ok_or_else(|| err("expected requests per second"))?,
                )
            }
            _ => {
                let (service, stat) = match lhs.strip_prefix("service.") {
                    Some(s) => (true, s),
                    None => (false, lhs.as_str()),
                };
                let stat = parse_stat(stat).ok_or_else(|| {
                    err("unknown metric (pNN, max, mean, min, service.pNN, errors, rate, late)")
                })?;
                let limit = time_ms(rhs)
                    .ok_or_else(|| err("expected a time with its unit: us, ms or s"))?;
                (
                    if service {
                        Metric::Service(stat)
                    } else {
                        Metric::Response(stat)
                    },
                    limit,
                )
            }
        };
        if scope.is_some() && matches!(metric, Metric::Late { .. }) {
            return Err(err("late is counted for the whole run, not per operation"));
        }
        Ok(Self {
            text: text.trim().to_owned(),
            scope,
            metric,
            cmp,
            limit,
        })
    }

    /// The operation it is scoped to, if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Checks the threshold; `None` when it names an operation that is not
    /// in `ops`.
    pub fn evaluate(
        &self,
        overall: &Figures<'_>,
        ops: &[(String, Figures<'_>)],
    ) -> Option<Verdict> {
        let f = match &self.scope {
            None => overall,
            Some(name) => &ops.iter().find(|(n, _)| n == name)?.1,
        };
        let value = self.value(f);
        let passed = value.is_some_and(|v| match self.cmp {
            Cmp::Lt => v < self.limit,
            Cmp::Le => v <= self.limit,
            Cmp::Gt => v > self.limit,
            Cmp::Ge => v >= self.limit,
        });
        Some(Verdict {
            threshold: self.text.clone(),
            value,
            passed,
        })
    }

    fn value(&self, f: &Figures<'_>) -> Option<f64> {
        let pct = |n: u64, of: u64| (of > 0).then(|| n as f64 * 100.0 / of as f64);
        match self.metric {
            Metric::Response(s) => stat(f.response, s),
            Metric::Service(s) => stat(f.service, s),
            Metric::Errors { percent: true } => pct(f.errors, f.requests),
            Metric::Errors { percent: false } => Some(f.errors as f64),
            Metric::Late { percent: true } => pct(f.late, f.sent),
            Metric::Late { percent: false } => Some(f.late as f64),
            Metric::Rate => {
                let s = f.elapsed.as_secs_f64();
                (s > 0.0).then(|| f.completed as f64 / s)
            }
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn stat(h: &Histogram<u64>, s: Stat) -> Option<f64> {
    if h.is_empty() {
        return None;
    }
    Some(match s {
        Stat::Quantile(q) => ms(h.value_at_quantile(q)),
        Stat::Max => ms(h.max()),
        Stat::Min => ms(h.min()),
        Stat::Mean => h.mean() / 1000.0,
    })
}

fn parse_stat(s: &str) -> Option<Stat> {
    match s {
        "max" => Some(Stat::Max),
        "mean" | "avg" => Some(Stat::Mean),
        "min" => Some(Stat::Min),
        _ => {
            let p: f64 = s.strip_prefix('p')?.parse().ok()?;
            (p > 0.0 && p <= 100.0).then_some(Stat::Quantile(p / 100.0))
        }
    }
}

fn number(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// `50ms`, `1.5s`, `250us` → ms.
fn time_ms(s: &str) -> Option<f64> {
    for (unit, factor) in [("ms", 1.0), ("us", 0.001), ("µs", 0.001), ("s", 1000.0)] {
        if let Some(n) = s.strip_suffix(unit) {
            return number(n).map(|v| v * factor);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::figures::record;
    use crate::load::figures::{Latencies, Tally};

    fn figures(l: &Latencies, unsent: u64) -> Figures<'_> {
        let tally = Tally {
            sent: l.count(),
            unsent,
            ..Tally::default()
        };
        Figures::of(l, &tally, Duration::from_secs(10))
    }

    #[test]
    fn thresholds_parse_in_every_documented_form() {
        for ok in [
            "p99<50ms",
            "p99.9 <= 200ms",
            "p50<1s",
            "max<2s",
            "mean<=800us",
            "service.p99<20ms",
            "errors<0.1%",
            "errors<=10",
            "rate>=95",
            "rate>90/s",
            "late<1%",
            "title:p99<20ms",
            "home:errors<1%",
        ] {
            Threshold::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn bad_thresholds_say_what_is_wrong() {
        for (bad, why) in [
            ("p99", "no comparison"),
            ("p99<50", "unit"),
            ("p99<fast", "unit"),
            ("p101<5ms", "unknown metric"),
            ("latency<5ms", "unknown metric"),
            ("errors<150%", "above 100"),
            ("errors<-1", "count or a percentage"),
            ("Title:p99<5ms", "operation"),
            ("title:late<1%", "whole run"),
            ("p99=5ms", "no comparison"),
        ] {
            let e = Threshold::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn thresholds_compare_the_right_figure() {
        let mut l = Latencies::new().unwrap();
        for ms in 1..=100u64 {
            record(&mut l.response, Duration::from_millis(ms));
            record(&mut l.service, Duration::from_millis(1));
        }
        let f = figures(&l, 0);
        let check = |t: &str| Threshold::parse(t).unwrap().evaluate(&f, &[]).unwrap();
        assert!(check("p50<=51ms").passed);
        assert!(!check("p99<50ms").passed);
        assert!(check("service.p99<2ms").passed);
        assert!(check("errors<0.1%").passed);
        assert!(check("rate>=10").passed); // 100 answers in 10 s
        assert!(!check("rate>10").passed);
        let v = check("max<1s");
        assert!(v.passed);
        assert!((v.value.unwrap() - 100.0).abs() < 0.1);
    }

    #[test]
    fn unsent_requests_count_as_errors_and_empty_runs_fail() {
        let mut l = Latencies::new().unwrap();
        for _ in 0..99 {
            record(&mut l.response, Duration::from_millis(1));
        }
        let f = figures(&l, 1);
        let v = Threshold::parse("errors<1%")
            .unwrap()
            .evaluate(&f, &[])
            .unwrap();
        assert!(!v.passed, "{v:?}"); // 1 of 100 is 1 %
        let empty = Latencies::new().unwrap();
        let f = figures(&empty, 0);
        let v = Threshold::parse("p99<1s")
            .unwrap()
            .evaluate(&f, &[])
            .unwrap();
        assert!(!v.passed && v.value.is_none());
    }

    #[test]
    fn scoped_thresholds_look_at_their_operation_only() {
        let mut slow = Latencies::new().unwrap();
        record(&mut slow.response, Duration::from_millis(500));
        let fast = Latencies::new().unwrap();
        let overall = figures(&fast, 0);
        let ops = vec![(
            "home".to_owned(),
            Figures::of_op(&slow, Duration::from_secs(1)),
        )];
        let t = Threshold::parse("home:p99<100ms").unwrap();
        assert!(!t.evaluate(&overall, &ops).unwrap().passed);
        assert!(
            Threshold::parse("title:p99<1ms")
                .unwrap()
                .evaluate(&overall, &ops)
                .is_none()
        );
    }
}
