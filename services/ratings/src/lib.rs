//! The ratings service: star ratings and viewing progress.

#![forbid(unsafe_code)]
