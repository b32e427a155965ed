//! Generates Rust code for every `.proto` under the workspace's `proto/`,
//! the descriptor set of all of them, and from that same set one descriptor
//! set per gRPC service (its file and the files it imports) plus the table
//! `descriptor_set(service)` in `descriptor_sets.rs`, so a server's
//! reflection describes only the services it serves.
//!
//! protoc comes from `protoc-bin-vendored` unless `PROTOC` is set, so a
//! machine with only Rust installed can build the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

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
    compile(&root, &files, &out, protoc)?;
    per_service(&out)
}

/// Splits `fleet_descriptor.bin` into one set per service: the service's
/// file and everything it imports (transitively), written to
/// `<package>.<Service>.bin`, and `descriptor_sets.rs` mapping each fully
/// qualified service name to its bytes.
fn per_service(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let all =
        FileDescriptorSet::decode(std::fs::read(out.join("fleet_descriptor.bin"))?.as_slice())?;
    let by_name: BTreeMap<&str, &FileDescriptorProto> =
        all.file.iter().map(|f| (f.name(), f)).collect();
    let mut table = String::from(
        "/// The encoded descriptor set of one fully qualified gRPC service\n\
         /// (its file and the files it imports), or `None` for a service not\n\
         /// defined under `proto/`.\n\
         pub fn descriptor_set(service: &str) -> Option<&'static [u8]> {\n    match service {\n",
    );
    for file in &all.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            let mut wanted = BTreeSet::new();
            let mut todo = vec![file.name()];
            while let Some(name) = todo.pop() {
                if wanted.insert(name) {
                    let f = by_name
                        .get(name)
                        .ok_or_else(|| format!("{full}: import {name} not in the set"))?;
                    todo.extend(f.dependency.iter().map(String::as_str));
                }
            }
            // Dependencies first, as protoc orders a set.
            let files = all
                .file
                .iter()
                .filter(|f| wanted.contains(f.name()))
                .cloned()
                .collect();
            let set = FileDescriptorSet { file: files };
            let path = out.join(format!("{full}.bin"));
            std::fs::write(&path, set.encode_to_vec())?;
            writeln!(
                table,
                "        {full:?} => Some(include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{full}.bin\"))),"
            )?;
        }
    }
    table.push_str("        _ => None,\n    }\n}\n");
    std::fs::write(out.join("descriptor_sets.rs"), table)?;
    Ok(())
}

fn compile(
    root: &Path,
    files: &[&str],
    out: &Path,
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
