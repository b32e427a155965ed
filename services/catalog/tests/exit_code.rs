//! The binary's entry point, run the way the `catalog` binary runs it.
//!
//! A test binary of its own, with one test: `main` installs the
//! process-wide log subscriber, which would otherwise print every other
//! test's logs (and two first installs could race).

use fleet_config::Env;
use std::process::ExitCode;

#[test]
fn unusable_configuration_exits_64() {
    for (key, value) in [
        ("SERVICE_VERSION", "3.0.0"),
        ("DAL_ADDRS", "dal.internal:7300"),
        ("GRPC_ADDR", "nowhere"),
    ] {
        let code = fleet_catalog::main(Env::from_pairs([(key, value)]));
        assert_eq!(code, ExitCode::from(64), "{key}={value}");
    }
}
