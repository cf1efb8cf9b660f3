//! Whether the broker is healthy and ready, as `/health` and `/ready` (on the metrics
//! and the admin listeners) tell load balancers and service managers.
//!
//! - Healthy: no listener, scheduler or `$SYS` task has stopped, the store's latest
//!   write succeeded, the scheduler is not behind its own deadlines (a stalled timer
//!   task shows as a deadline long past), and the broker is not shutting down.
//! - Ready: healthy, and start-up finished: the store restored and every listener bound
//!   (`crate::server::start` marks it last).
//!
//! Tasks report their own end (`HealthState::task_stopped`, from a wrapper around each
//! task), so checking costs a few atomic loads and one short lock. Subsystems beside the
//! broker (a cluster: no leader) add their own conditions as a `HealthCheck`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::broker::{lock, Broker};

/// How far past its earliest deadline the scheduler may be before it counts as stalled.
pub const SCHEDULER_STALL: Duration = Duration::from_secs(10);

/// A subsystem's own health, asked at every check: a cluster without a leader, a
/// bridge that must be up... Registered with `HealthState::add_check`.
pub trait HealthCheck: Send + Sync {
    /// Why the subsystem is not healthy now; empty when it is.
    fn problems(&self) -> Vec<String>;
}

/// What the broker's tasks report about themselves.
#[derive(Default)]
pub struct HealthState {
    ready: AtomicBool,
    stopped: Mutex<Vec<String>>,
    checks: Mutex<Vec<Arc<dyn HealthCheck>>>,
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthState")
            .field("ready", &self.is_ready())
            .field("stopped", &self.stopped())
            .finish_non_exhaustive()
    }
}

impl HealthState {
    /// Start-up finished: the store was restored and every listener is bound.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A task that should run as long as the broker ended (`what` names it).
    pub fn task_stopped(&self, what: String) {
        lock(&self.stopped).push(what);
    }

    fn stopped(&self) -> Vec<String> {
        lock(&self.stopped).clone()
    }

    /// Adds a subsystem's check to every later `check`.
    pub fn add_check(&self, check: Arc<dyn HealthCheck>) {
        lock(&self.checks).push(check);
    }

    fn checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        lock(&self.checks).clone()
    }
}

/// The answer of `/health` and `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// "ok" or "unhealthy".
    pub status: &'static str,
    pub ready: bool,
    /// Every reason it is not healthy; empty when it is.
    pub problems: Vec<String>,
}

impl HealthReport {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `broker` now.
pub fn check(broker: &Broker) -> HealthReport {
    let state = broker.health();
    let mut problems = Vec::new();
    if broker.is_shutting_down() {
        problems.push("shutting down".to_string());
    } else {
        for what in state.stopped() {
            problems.push(format!("{what} stopped"));
        }
    }
    if broker.store().stats().failing {
        problems.push("the store is failing writes".to_string());
    }
    // A cluster node cut off from the majority refuses new persistent sessions.
    if !broker.cluster_healthy() {
        problems.push("no cluster leader".to_string());
    }
    // Asked without the list's lock held: a check may take its own locks.
    for check in state.checks() {
        problems.extend(check.problems());
    }
    if let Some(late) = broker.scheduler_lag() {
        if late > SCHEDULER_STALL {
            problems.push(format!(
                "the session scheduler is {} s behind its timers",
                late.as_secs()
            ));
        }
    }
    HealthReport {
        status: if problems.is_empty() {
            "ok"
        } else {
            "unhealthy"
        },
        ready: state.is_ready() && problems.is_empty(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::MemoryStore;

    #[test]
    fn ready_only_once_marked_and_healthy_until_a_task_stops() {
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        let report = check(&broker);
        assert!(report.healthy() && !report.ready, "{report:?}");
        broker.health().mark_ready();
        assert!(check(&broker).ready);
        broker
            .health()
            .task_stopped("listener 127.0.0.1:1883".into());
        let report = check(&broker);
        assert!(!report.healthy() && !report.ready);
        assert_eq!(report.problems, ["listener 127.0.0.1:1883 stopped"]);
        broker.begin_shutdown();
        assert_eq!(check(&broker).problems, ["shutting down"]);
    }

    /// The scheduler task is not running here: an offline session's expiry comes due
    /// and stays due, which is what a stalled scheduler looks like.
    #[tokio::test(start_paused = true)]
    async fn a_scheduler_behind_its_timers_is_unhealthy() {
        use crate::protocol::{Connect, ConnectProperties, ProtocolVersion};
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        let connect = Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            client_id: "sleepy".into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        let connected = broker.connect(&connect, Duration::from_secs(5), None);
        broker.disconnect(&connected.handle, connected.attachment.generation, false);
        tokio::time::advance(Duration::from_secs(5) + SCHEDULER_STALL).await;
        assert!(
            check(&broker).healthy(),
            "exactly at the limit is not yet late"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let report = check(&broker);
        assert_eq!(
            report.problems,
            ["the session scheduler is 12 s behind its timers"]
        );
        // Running, it catches up and the broker is healthy again.
        tokio::spawn(broker.clone().run_scheduler());
        for _ in 0..1000 {
            if check(&broker).healthy() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(check(&broker).healthy());
        assert!(broker.session("sleepy").is_none());
    }

    struct NoLeader;

    impl HealthCheck for NoLeader {
        fn problems(&self) -> Vec<String> {
            vec!["the cluster has no leader".to_string()]
        }
    }

    #[test]
    fn a_subsystem_check_makes_the_broker_unhealthy() {
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        broker.health().mark_ready();
        broker.health().add_check(Arc::new(NoLeader));
        let report = check(&broker);
        assert_eq!(report.problems, ["the cluster has no leader"]);
        assert!(!report.ready);
    }

    /// A memory store whose latest write failed.
    struct FailingStore(MemoryStore);

    impl crate::storage::Store for FailingStore {
        fn submit(&self, ops: Vec<crate::storage::StoreOp>) -> crate::storage::Completion {
            self.0.submit(ops)
        }
        fn flush(&self) -> crate::storage::Completion {
            self.0.flush()
        }
        fn restore(
            &self,
            now: crate::storage::UnixMillis,
        ) -> Result<crate::storage::RestoredState, crate::storage::StoreError> {
            self.0.restore(now)
        }
        fn next_message_id(&self) -> crate::storage::MessageId {
            self.0.next_message_id()
        }
        fn stats(&self) -> crate::storage::StoreStats {
            crate::storage::StoreStats {
                failing: true,
                ..self.0.stats()
            }
        }
    }

    #[test]
    fn a_failing_store_is_unhealthy_and_not_ready() {
        let broker = Broker::new(
            Config::default(),
            Arc::new(FailingStore(MemoryStore::new())),
        );
        broker.health().mark_ready();
        let report = check(&broker);
        assert_eq!(report.problems, ["the store is failing writes"]);
        assert!(!report.ready);
        assert_eq!(report.status, "unhealthy");
    }
}
