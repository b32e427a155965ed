//! The fleet command-line tool: up, load, route, status.

#![forbid(unsafe_code)]
