//! `fleet up`'s supervisor and topology, as a library.
//!
//! [`Topology`] says what the system is as local processes — which
//! instances, on which ports, against which backends (embedded, or real
//! Cassandra/Scylla, Redis and Consul), behind which Toxiproxy proxies —
//! and starts it tier by tier, each ready before the next is given its
//! addresses. [`RunningChild`] is one process: started once it prints its
//! `listening` line, ready once `/readyz` answers 200, stopped with SIGTERM
//! and a grace period. [`heal::watch`] restarts instances that crash, with
//! [`RestartBackoff`]; [`registry`] writes `run/registry.json`.
//!
//! Users: the `fleet` tool (`fleet up`, and its game-day runner, which
//! signals the registry's pids, waits on [`ready`] and drives
//! [`toxiproxy`]), and the end-to-end tests, which start the real
//! binaries exactly as `fleet up` does. Errors are typed; the binaries add
//! the context.

#![forbid(unsafe_code)]

pub mod child;
pub mod heal;
pub mod proxies;
pub mod ready;
pub mod registry;
pub mod restart;
pub mod signal;
pub mod topology;
pub mod toxiproxy;

pub use child::{Bound, ChildSpec, RunningChild, SupervisorError, parse_listening};
pub use registry::RegistryEntry;
pub use restart::{RestartBackoff, RestartPolicy};
pub use topology::{
    Backends, CATALOG_V1_2, CATALOG_V1_3, CATALOG_V2, Launcher, ServiceProxy, Topology,
    TopologyError, TopologyOptions, V1,
};
