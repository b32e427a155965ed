//! The `ratings` binary: everything lives in the `fleet_ratings` library.

fn main() -> std::process::ExitCode {
    fleet_ratings::main(fleet_config::Env::from_process())
}
