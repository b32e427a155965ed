//! The `dal` binary: see the library for everything.

fn main() -> std::process::ExitCode {
    fleet_dal::main_with_args(fleet_config::Env::from_process(), std::env::args())
}
