//! Consul for every instance: its HTTP API client ([`ConsulClient`]: the
//! agent's service registration, the health-filtered catalog and KV, with
//! blocking queries), the settings (`CONSUL_*`, [`DiscoveryConfig`]) and
//! registration ([`Registrar`]): name, unique id, address, gRPC port, admin
//! port, version, interface major, zone, and a health check against the
//! instance's own `/readyz` or gRPC health, with
//! `DeregisterCriticalServiceAfter` so a crashed instance drops out;
//! deregistered on SIGTERM before it drains.
//!
//! Servers depend on this crate alone; the client side (watching
//! instances and route tables for driver clients) is `fleet-discovery`,
//! which builds on it, so a server does not link the client stack.

#![forbid(unsafe_code)]

mod client;
mod config;
mod registrar;

pub use client::{ConsulClient, ConsulError, HealthCheck, Indexed, Registration, ServiceEntry};
pub use config::{CheckKind, DEFAULT_KV_PREFIX, DiscoveryConfig};
pub use registrar::{InstanceInfo, Registrar, SharedRegistrar};
