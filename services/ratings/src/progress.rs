//! When a title counts as finished, for "continue watching".
//!
//! The dal stores every position it is given; "continue watching" lists
//! only titles the user has started and not finished. A title is finished
//! once [`FINISHED_PERCENT`] of its runtime has been watched: the last few
//! minutes are usually credits, which few people sit through. A title with
//! an unknown runtime (0) is never considered finished.

/// Share of the runtime (in percent) after which a title is finished.
pub const FINISHED_PERCENT: u64 = 95;

/// Whether `position_s` seconds into a title of `runtime_min` minutes
/// means the user has finished it.
pub fn is_finished(position_s: u32, runtime_min: u32) -> bool {
    let runtime_s = u64::from(runtime_min) * 60;
    runtime_s > 0 && u64::from(position_s) * 100 >= runtime_s * FINISHED_PERCENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credits_do_not_need_watching() {
        // 100 minutes: finished from 95 minutes on.
        assert!(!is_finished(94 * 60, 100));
        assert!(!is_finished(95 * 60 - 1, 100));
        assert!(is_finished(95 * 60, 100));
        assert!(is_finished(100 * 60, 100));
        assert!(is_finished(86_400, 100));
    }

    #[test]
    fn just_started_is_not_finished() {
        assert!(!is_finished(0, 90));
        assert!(!is_finished(60, 90));
    }

    #[test]
    fn an_unknown_runtime_is_never_finished() {
        assert!(!is_finished(86_400, 0));
    }
}
