//! The edge: the only public door, JSON over HTTP.

#![forbid(unsafe_code)]
