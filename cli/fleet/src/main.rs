//! `fleet`: see the library docs.

fn main() -> std::process::ExitCode {
    fleet::main()
}
