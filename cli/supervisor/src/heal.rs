//! Watching a running [`Topology`] and healing it: an instance that exits
//! on its own is started again on its addresses after its
//! [`RestartBackoff`] delay — what `fleet up` does until it is stopped.
//!
//! The loop only acts; what is said about it (log lines, the registry
//! file, Prometheus' targets) is the caller's, told through [`Event`]s.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::Duration;

use crate::child::{RunningChild, SupervisorError};
use crate::restart::{RestartBackoff, RestartPolicy};
use crate::topology::Topology;

/// How often the instances are looked at.
const POLL: Duration = Duration::from_millis(100);

/// What happened while the topology was watched.
#[derive(Debug)]
pub enum Event<'a> {
    /// An instance exited on its own.
    Exited {
        /// The instance (its pid and restart count as of the exit).
        child: &'a RunningChild,
        /// How it exited.
        status: ExitStatus,
        /// How long it had run.
        ran: Duration,
        /// When it is started again; `None`: never (no restart policy),
        /// it stays down.
        restart_in: Option<Duration>,
    },
    /// An instance was started again and is listening.
    Restarted {
        /// The whole topology, the new process in it.
        topology: &'a Topology,
        /// Which instance.
        instance_id: &'a str,
        /// How long the new process took to listen.
        took: Duration,
    },
    /// Starting an instance again failed; it counts as another crash right
    /// after its start, so the next attempt backs off further.
    RestartFailed {
        /// Which instance.
        instance_id: &'a str,
        /// Why.
        error: &'a SupervisorError,
    },
}

/// A crashed instance: when it is due to start again (`None`: never,
/// restarts are off).
struct Down {
    due: Option<tokio::time::Instant>,
}

/// Watches `topo` until `stop` completes. With a `heal` policy, an instance
/// that exits on its own is started again (same addresses, new pid) after
/// the policy's backoff, each restart waiting up to `start_timeout` for
/// the `listening` line; without one it is reported and left down. Once
/// `stop` completes nothing is restarted any more: a restart in progress
/// is abandoned (its new process killed) and the caller stops everything.
pub async fn watch(
    topo: &mut Topology,
    heal: Option<RestartPolicy>,
    start_timeout: Duration,
    stop: impl Future<Output = ()>,
    mut on_event: impl FnMut(Event<'_>),
) {
    let mut stop = std::pin::pin!(stop);
    let mut backoff: HashMap<String, RestartBackoff> = HashMap::new();
    let mut down: HashMap<String, Down> = HashMap::new();
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let now = tokio::time::Instant::now();
        for child in topo.instances_mut() {
            let id = child.spec.instance_id.clone();
            if down.contains_key(&id) {
                continue;
            }
            let Some(status) = child.try_exit_status() else {
                continue;
            };
            let ran = now.saturating_duration_since(child.started_at);
            let restart_in = heal.map(|policy| {
                backoff
                    .entry(id.clone())
                    .or_insert_with(|| RestartBackoff::new(policy))
                    .on_exit(ran)
            });
            on_event(Event::Exited {
                child,
                status,
                ran,
                restart_in,
            });
            // Without a policy it is never restarted: out of the loop for good.
            down.insert(
                id,
                Down {
                    due: restart_in.map(|delay| now + delay),
                },
            );
        }
        let due: Vec<String> = down
            .iter()
            .filter(|(_, d)| d.due.is_some_and(|due| due <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(child) = topo.instance_mut(&id) else {
                down.remove(&id);
                continue;
            };
            let t = std::time::Instant::now();
            // The stop signal wins over a restart in progress: dropping
            // the restart kills the half-started process (kill_on_drop).
            let restarted = tokio::select! {
                () = &mut stop => return,
                r = child.respawn(start_timeout) => r,
            };
            down.remove(&id);
            match restarted {
                Ok(()) => {
                    let took = t.elapsed();
                    on_event(Event::Restarted {
                        topology: topo,
                        instance_id: &id,
                        took,
                    });
                }
                Err(error) => {
                    child.started_at = tokio::time::Instant::now();
                    on_event(Event::RestartFailed {
                        instance_id: &id,
                        error: &error,
                    });
                }
            }
        }
    }
}
