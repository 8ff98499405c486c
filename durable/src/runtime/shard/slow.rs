//! Turns and entity operations that held their shard's thread too long. Orchestrator code
//! and entity operations run on the shard's one thread, between the turns of every other
//! instance of the shard, so code that blocks (a `std::thread::sleep` or blocking I/O in a
//! helper, where `#[orchestrator]` cannot see it; a long computation) stalls them all. The
//! runtime cannot interrupt it; it says which instance did it, past
//! `Config::slow_turn_warning`, and counts it. The caller measures with one pair of clock
//! reads; nothing here runs unless the threshold was passed.

use super::writes::Env;
use crate::runtime::metrics::Metrics;
use durable_types::{EntityId, InstanceId};
use std::time::Duration;

/// Logs and counts a turn of orchestrator `name` on `instance` that took `elapsed`, if that
/// is past the threshold. `replayed`: the turn first rebuilt the engine from its history.
pub(crate) fn turn_took(
    elapsed: Duration,
    instance: &InstanceId,
    name: &str,
    replayed: bool,
    env: &Env,
) {
    let threshold = env.config.slow_turn_warning;
    if elapsed < threshold {
        return;
    }
    Metrics::add(&env.metrics.slow_turns, 1);
    tracing::warn!(
        %instance,
        orchestrator = name,
        elapsed_ms = elapsed.as_millis() as u64,
        replayed,
        "a turn of orchestrator `{name}` held its orchestration thread for {elapsed:?} \
         (slow_turn_warning: {threshold:?}), and every instance on that thread waited: \
         move blocking work (sleeps, blocking I/O, long computations) into an activity"
    );
}

/// Logs and counts operation `operation` of `entity` that took `elapsed`, if that is past
/// the threshold.
pub(crate) fn operation_took(elapsed: Duration, entity: &EntityId, operation: &str, env: &Env) {
    let threshold = env.config.slow_turn_warning;
    if elapsed < threshold {
        return;
    }
    Metrics::add(&env.metrics.slow_entity_operations, 1);
    tracing::warn!(
        %entity,
        operation,
        elapsed_ms = elapsed.as_millis() as u64,
        "operation `{operation}` of entity `{entity}` held its orchestration thread for \
         {elapsed:?} (slow_turn_warning: {threshold:?}), and every instance on that thread \
         waited: an operation should only change the entity's state; do slow work in an \
         activity and send the entity its result"
    );
}
