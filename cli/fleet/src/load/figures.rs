//! The figures of a run: the HDR histograms every request is recorded in
//! ([`Latencies`]), the counters of what was scheduled, sent, late and
//! unsent ([`Tally`]), and [`Figures`], what thresholds and reports read.
//!
//! The bottom of `load`: the recorder fills these, thresholds judge them,
//! reports print them, and this module knows none of those (arrows point
//! down only: `recorder`, `threshold`, `report` → `figures`).

use std::time::Duration;

use hdrhistogram::Histogram;

/// A histogram could not be made or added (a bug: the bounds are
/// constants).
#[derive(Debug, thiserror::Error)]
#[error("histogram: {0}")]
pub struct HistogramError(String);

/// Smallest trackable value: 1 µs.
pub const LOWEST_US: u64 = 1;
/// Largest trackable value: 1 h, in µs.
pub const HIGHEST_US: u64 = 3_600_000_000;
/// Significant digits.
pub const SIGFIG: u8 = 3;
/// A plain copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Requests the schedule made due.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Late because of the generator.
    pub late_generator: u64,
    /// Late because of the concurrency limit.
    pub late_limit: u64,
    /// Never sent.
    pub unsent: u64,
}

/// A histogram over 1 µs … 1 h with 3 significant digits.
///
/// # Errors
/// [`HistogramError`] (never, for these constant bounds).
pub fn histogram() -> Result<Histogram<u64>, HistogramError> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .map_err(|e| HistogramError(format!("{e:?}")))
}

/// Records `d` in µs, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(LOWEST_US, HIGHEST_US));
}

/// Response time, service time, and the response time of failures alone
/// (so that error counts survive in an interval log).
#[derive(Clone, Debug)]
pub struct Latencies {
    /// From due to finished.
    pub response: Histogram<u64>,
    /// From sent to finished.
    pub service: Histogram<u64>,
    /// Response time of the requests that failed.
    pub errors: Histogram<u64>,
}

impl Latencies {
    /// Empty histograms.
    ///
    /// # Errors
    /// [`HistogramError`] (never).
    pub fn new() -> Result<Self, HistogramError> {
        Ok(Self {
            response: histogram()?,
            service: histogram()?,
            errors: histogram()?,
        })
    }

    pub(super) fn record(&mut self, response: Duration, service: Duration, ok: bool) {
        record(&mut self.response, response);
        record(&mut self.service, service);
        if !ok {
            record(&mut self.errors, response);
        }
    }

    /// Adds `other`'s values.
    ///
    /// # Errors
    /// [`HistogramError`] (never for histograms of this module).
    pub fn add(&mut self, other: &Self) -> Result<(), HistogramError> {
        let e = |e: hdrhistogram::AdditionError| HistogramError(format!("{e:?}"));
        self.response.add(&other.response).map_err(e)?;
        self.service.add(&other.service).map_err(e)?;
        self.errors.add(&other.errors).map_err(e)?;
        Ok(())
    }

    pub(super) fn reset(&mut self) {
        self.response.reset();
        self.service.reset();
        self.errors.reset();
    }

    /// Requests recorded.
    pub fn count(&self) -> u64 {
        self.response.len()
    }

    /// Of which failed.
    pub fn failed(&self) -> u64 {
        self.errors.len()
    }
}

/// The figures a threshold is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Figures<'a> {
    /// Response times.
    pub response: &'a Histogram<u64>,
    /// Service times.
    pub service: &'a Histogram<u64>,
    /// Requests that count for the error rate (answered plus unsent).
    pub requests: u64,
    /// Failed plus unsent.
    pub errors: u64,
    /// Answered.
    pub completed: u64,
    /// Sent.
    pub sent: u64,
    /// Sent over 1 ms late.
    pub late: u64,
    /// Measured time.
    pub elapsed: Duration,
}

impl<'a> Figures<'a> {
    /// Figures of the whole run.
    pub fn of(l: &'a Latencies, tally: &Tally, elapsed: Duration) -> Self {
        Self {
            response: &l.response,
            service: &l.service,
            requests: l.count() + tally.unsent,
            errors: l.failed() + tally.unsent,
            completed: l.count(),
            sent: tally.sent,
            late: tally.late_generator + tally.late_limit,
            elapsed,
        }
    }

    /// Figures of one operation (unsent requests belong to none).
    pub fn of_op(l: &'a Latencies, elapsed: Duration) -> Self {
        Self {
            response: &l.response,
            service: &l.service,
            requests: l.count(),
            errors: l.failed(),
            completed: l.count(),
            sent: l.count(),
            late: 0,
            elapsed,
        }
    }
}

/// µs → ms.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}
