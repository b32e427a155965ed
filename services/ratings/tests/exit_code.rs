//! The binary's entry point, run the way the `ratings` binary runs it.
//!
//! A test binary of its own, with one test: `main` installs the
//! process-wide log subscriber, which would otherwise print every other
//! test's logs (and two first installs could race).

use fleet_config::Env;
use std::process::ExitCode;

#[test]
fn unusable_configuration_exits_64() {
    for (key, value) in [
        ("SERVICE_VERSION", "1.3.0"),
        ("DAL_ADDRS", "dal.internal:7300"),
        ("GRPC_ADDR", "nowhere"),
    ] {
        let code = fleet_ratings::main(Env::from_pairs([(key, value)]));
        assert_eq!(code, ExitCode::from(64), "{key}={value}");
    }
}
