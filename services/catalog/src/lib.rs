//! The catalog service: titles, genres and browse pages.

#![forbid(unsafe_code)]
