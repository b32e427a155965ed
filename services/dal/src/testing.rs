//! The dal as the tests of the services in front of it start it
//! (`test-util` only): on a fresh data directory, seeded.

use fleet_testkit::{TestService, loopback_env};

use crate::App;

/// The admin token [`start_seeded`] gives the dal (fault rules) unless
/// `extra` names another.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A dal on loopback port 0 over a fresh temporary data directory seeded
/// with `titles` titles and `users` users, admin token [`ADMIN_TOKEN`],
/// with `extra` settings on top; not yet waited ready.
///
/// # Panics
/// When it does not start.
pub async fn start_seeded(titles: u32, users: u32, extra: &[(&str, &str)]) -> TestService {
    let (titles, users) = (titles.to_string(), users.to_string());
    let env = loopback_env(
        [
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("SEED", "true"),
            ("SEED_TITLES", titles.as_str()),
            ("SEED_USERS", users.as_str()),
        ]
        .into_iter()
        .chain(extra.iter().copied()),
    );
    TestService::start_with_data::<App>(env, "DATA_DIR").await
}
