//! Generated gRPC code for the system's versioned proto packages.
//!
//! Code is generated at build time from the workspace's `proto/` directory;
//! nothing here is written by hand except this module tree. Proto types never
//! derive `serde` traits: only the edge knows JSON, and it converts
//! explicitly.

#![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]

/// `dal.v1`: the data access layer.
pub mod dal {
    pub mod v1 {
        tonic::include_proto!("dal.v1");
    }
}

/// `catalog.v1`: titles, genres and browse pages.
pub mod catalog {
    pub mod v1 {
        tonic::include_proto!("catalog.v1");
    }
    /// `catalog.v2`: interface major 2 (breaking; served by catalog 2.x).
    pub mod v2 {
        tonic::include_proto!("catalog.v2");
    }
}

/// `ratings.v1`: star ratings and viewing progress.
pub mod ratings {
    pub mod v1 {
        tonic::include_proto!("ratings.v1");
    }
}

/// Encoded `FileDescriptorSet` of every package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fleet_descriptor");
