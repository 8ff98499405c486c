//! Counters of what the runtime did, for tests and benchmarks: turns run, history events
//! replayed, commits and the like. Relaxed atomics: they are statistics, not
//! synchronization.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the runtime's threads.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) turns: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) history_events_replayed: AtomicU64,
    pub(crate) activities_started: AtomicU64,
    pub(crate) activities_completed: AtomicU64,
    pub(crate) timers_fired: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_requests: AtomicU64,
    pub(crate) instances_started: AtomicU64,
    pub(crate) instances_ended: AtomicU64,
    pub(crate) cache_evictions: AtomicU64,
    pub(crate) long_histories: AtomicU64,
    pub(crate) slow_turns: AtomicU64,
    pub(crate) slow_entity_operations: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            turns: read(&self.turns),
            replays: read(&self.replays),
            history_events_replayed: read(&self.history_events_replayed),
            activities_started: read(&self.activities_started),
            activities_completed: read(&self.activities_completed),
            timers_fired: read(&self.timers_fired),
            commits: read(&self.commits),
            commit_requests: read(&self.commit_requests),
            instances_started: read(&self.instances_started),
            instances_ended: read(&self.instances_ended),
            cache_evictions: read(&self.cache_evictions),
            long_histories: read(&self.long_histories),
            slow_turns: read(&self.slow_turns),
            slow_entity_operations: read(&self.slow_entity_operations),
        }
    }
}

/// A copy of the runtime's counters at one moment, from
/// [`Runtime::metrics`](crate::Runtime::metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Orchestration turns run.
    pub turns: u64,
    /// Times an execution was rebuilt from its history (after a restart or an eviction).
    pub replays: u64,
    /// History events replayed in those rebuilds. Zero while every instance stays hot.
    pub history_events_replayed: u64,
    /// Activity executions started (including re-runs after a restart).
    pub activities_started: u64,
    /// Activity executions that returned (successfully or not).
    pub activities_completed: u64,
    /// Durable timers fired.
    pub timers_fired: u64,
    /// Store commits: with the default durability, one fsync each.
    pub commits: u64,
    /// Commit requests (turns, client requests) folded into those commits.
    pub commit_requests: u64,
    /// Executions started.
    pub instances_started: u64,
    /// Executions ended (completed, failed, terminated or continued as new).
    pub instances_ended: u64,
    /// Hot instances dropped from the cache to bound memory.
    pub cache_evictions: u64,
    /// Executions whose history grew past
    /// [`history_warning_events`](crate::RuntimeBuilder::history_warning_events) (each
    /// warned once, in the log).
    pub long_histories: u64,
    /// Orchestrator turns that held their orchestration thread longer than
    /// [`slow_turn_warning`](crate::RuntimeBuilder::slow_turn_warning) (each logged).
    pub slow_turns: u64,
    /// Entity operations that held their orchestration thread longer than
    /// [`slow_turn_warning`](crate::RuntimeBuilder::slow_turn_warning) (each logged).
    pub slow_entity_operations: u64,
}
