//! Test support shared by every crate's integration tests.
//!
//! The one skip policy: a test that needs a real backend (from
//! `scripts/backends`, announced through `FLEET_TEST_*` variables) asks
//! [`backend`] for it. Present: the test runs. Missing while `CI` is set
//! (any non-empty value): the test fails — CI never skips a real-backend
//! test. Missing outside CI: the test is reported as skipped on the
//! process's own stderr (libtest's capture does not swallow it) and in the
//! skip log `scripts/test` counts, and the caller returns early.
//!
//! The one harness: [`TestService::start`] builds any service's app (each
//! implements [`TestApp`] behind its `test-util` feature) from an
//! environment ([`loopback_env`]: port 0 and fast readiness), runs it on
//! its own task, gives its addresses, waits for `/readyz` and stops it —
//! on drop too. [`probe`] reads an instance's admin port, [`net`] hands
//! out free, closed and hung loopback addresses, and [`FleetUp`] runs the
//! `fleet up` process until it is ready and stops it with SIGTERM.
//! [`ConsulAgent`] is a Consul dev agent of a test's own.
//!
//! [`reflection`] asks a running server what its gRPC reflection
//! describes, as `grpcurl list` would; [`webdriver`] drives headless
//! Chromium through chromedriver.
//!
//! Only tests depend on this crate, and it depends on no service: a
//! service's own tests may use it without a cycle.

#![forbid(unsafe_code)]

mod consul;
mod fleet_up;
pub mod net;
pub mod probe;
pub mod reflection;
mod service;
pub mod webdriver;

pub use consul::ConsulAgent;
pub use fleet_up::{FleetUp, FleetUpBuilder, all_instances_ready};
pub use net::{black_hole, closed_port, free_addr, unique_name};
pub use service::{BoxError, TestApp, TestService, loopback_env};

/// The environment type [`TestApp::build`] reads (re-exported for
/// [`impl_test_app!`]).
pub use fleet_config::Env;
/// The token that stops a [`TestApp`] (re-exported for [`impl_test_app!`]).
pub use tokio_util::sync::CancellationToken;

use std::io::Write as _;

/// The variable naming the file every skip is appended to (one line per
/// skip: `<test>\t<reason>`); `scripts/test` sets it and prints the count.
pub const SKIP_LOG_VAR: &str = "FLEET_TEST_SKIP_LOG";

/// Whether a missing backend fails the test: `CI` is set to anything
/// non-empty (`true`, `1`, `yes`, …).
pub fn strict() -> bool {
    strict_with(std::env::var_os("CI").as_deref())
}

fn strict_with(ci: Option<&std::ffi::OsStr>) -> bool {
    ci.is_some_and(|v| !v.is_empty())
}

/// The value of the backend variable `var` (e.g. `FLEET_TEST_SCYLLA_NODES`),
/// or `None` after reporting this test as skipped: the caller returns.
///
/// # Panics
/// When `var` is missing or empty and [`strict`] (CI): a missing backend
/// fails the run.
pub fn backend(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            skip(&format!(
                "{var} is not set (run `scripts/backends up` and source the env file it prints, or use scripts/test)"
            ));
            None
        }
    }
}

/// Reports the running test as skipped for `reason`; the caller returns.
///
/// # Panics
/// When [`strict`] (CI): a test that cannot run there is a failure.
pub fn skip(reason: &str) {
    let test = current_test();
    assert!(
        !strict(),
        "{test}: {reason}; CI is set, so a missing backend fails the run instead of skipping"
    );
    let line = format!("SKIPPED {test}: {reason}\n");
    // Straight to file descriptor 2: `eprintln!` goes through libtest's
    // output capture and would only show for failing tests.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR).filter(|p| !p.is_empty()) {
        // One `write` of one short line on an O_APPEND file: concurrent
        // tests never interleave within a line.
        let entry = format!("{test}\t{reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(entry.as_bytes()));
        if let Err(e) = written {
            let _ = writeln!(
                std::io::stderr().lock(),
                "fleet-testkit: cannot append to {}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

/// The running test's name (libtest names each test's thread after it),
/// qualified by the test binary.
fn current_test() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed test>");
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            // cargo appends `-<hash>` to test binaries.
            Some((base, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => base.to_owned(),
            _ => s,
        })
        .unwrap_or_default();
    format!("{binary}::{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_non_empty_ci_is_strict() {
        use std::ffi::OsStr;
        for v in ["true", "1", "yes", "false"] {
            assert!(strict_with(Some(OsStr::new(v))), "CI={v}");
        }
        assert!(!strict_with(Some(OsStr::new(""))));
        assert!(!strict_with(None));
    }

    #[test]
    fn the_test_name_is_the_libtest_thread_name() {
        let name = current_test();
        assert!(
            name.ends_with("::tests::the_test_name_is_the_libtest_thread_name"),
            "{name}"
        );
    }
}
