//! Generates Rust code for every `.proto` under the workspace's `proto/`.
//!
//! protoc comes from `protoc-bin-vendored` unless `PROTOC` is set, so a
//! machine with only Rust installed can build the workspace.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "dal/v1/dal.proto",
        "catalog/v1/catalog.proto",
        "catalog/v2/catalog.proto",
        "ratings/v1/ratings.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    // Hand the vendored protoc to the builder rather than setting PROTOC:
    // edition 2024 makes `set_var` unsafe and the crate forbids unsafe code.
    let protoc = match std::env::var_os("PROTOC") {
        Some(_) => None,
        None => Some(protoc_bin_vendored::protoc_bin_path()?),
    };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    compile(&root, &files, &out, protoc)
}

fn compile(
    root: &std::path::Path,
    files: &[&str],
    out: &std::path::Path,
    protoc: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    if let Some(protoc) = protoc {
        config.protoc_executable(protoc);
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("fleet_descriptor.bin"))
        .compile_with_config(config, &paths, &[root.to_path_buf()])?;
    Ok(())
}
