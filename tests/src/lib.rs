//! End-to-end tests: the real binaries on loopback, driven through the driver clients.

#![forbid(unsafe_code)]
