//! The data access layer: the only service that touches storage.

#![forbid(unsafe_code)]
