//! The edge binary; see the `fleet_edge` library.

fn main() -> std::process::ExitCode {
    fleet_edge::main(fleet_config::Env::from_process())
}
