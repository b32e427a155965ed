//! Driver client for the edge's JSON API (used by tests and the load tool).

#![forbid(unsafe_code)]
