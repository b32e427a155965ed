//! The `catalog` binary: everything lives in the `fleet_catalog` library.

fn main() -> std::process::ExitCode {
    fleet_catalog::main(fleet_config::Env::from_process())
}
