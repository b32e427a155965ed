//! Signals to a process by pid, without unsafe code.
//!
//! Shared by the supervisor (SIGTERM to drain, SIGKILL after the grace
//! period) and the game-day runner (kill and stop of a `fleet up`
//! instance, by the pid in `run/registry.json`).

pub use nix::sys::signal::Signal;

/// Sends `sig` to process `pid`. A process that is already gone (ESRCH)
/// counts as signalled. Pid 0, or one beyond the platform's range, is
/// never signalled: `kill(0, …)` would reach this very process group.
///
/// # Errors
/// The `kill(2)` error (EPERM: not our process).
pub fn send(pid: u32, sig: Signal) -> Result<(), nix::Error> {
    let pid = i32::try_from(pid).unwrap_or(0);
    if pid <= 0 {
        return Ok(());
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_zero_is_never_signalled() {
        // kill(0, SIGKILL) would end the test process group.
        assert!(send(0, Signal::SIGKILL).is_ok());
    }

    #[test]
    fn a_process_already_gone_counts_as_signalled() {
        // Beyond /proc/sys/kernel/pid_max's ceiling (2^22): never in use.
        assert!(send(4_194_305, Signal::SIGTERM).is_ok());
    }
}
