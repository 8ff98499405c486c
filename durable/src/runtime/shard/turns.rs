//! Running a turn: bring the instance's engine into memory (replaying its history if it is
//! not hot), feed it the turn's inputs, and turn what comes out into the round's writes —
//! history appended, work stored and dispatched after the commit, the instance record, and
//! at the end of an execution its leftovers cancelled and its parent told.

use super::{Round, Shard, Slot};
use crate::core::panic_message;
use crate::core::{
    Action, Engine, Outcome, Outstanding, Turn, TurnLimits, check_turn, outstanding_in,
};
use crate::runtime::metrics::Metrics;
use crate::runtime::routing::SCHEDULED_START_TASK;
use crate::runtime::writer::Dispatch;
use durable_store::{
    ActivityKey, ActivityWorkItem, EntityCaller, EntityId, ExecutionId, Failure, FailureKind,
    HistoryEvent, InstanceId, Json, ParentRef, RuntimeStatus, TaskId, TimerKey, TimerRecord,
    Timestamp,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Why an engine could not be brought back.
pub(super) enum Replay {
    /// The store could not be read just now; try again later.
    Transient(durable_store::Error),
    /// It never will: the history is corrupt or diverges from the code, or the
    /// orchestrator is not registered.
    Failed(Failure),
}

impl Shard {
    /// The instance's engine, replaying its history first if it is not in memory.
    pub(super) fn hot_engine(&mut self, instance: &InstanceId) -> Result<&mut Engine, Replay> {
        let shared = Arc::clone(&self.shared);
        let Some(slot) = self.slots.get_mut(instance) else {
            return Err(Replay::Failed(internal("the instance is not loaded")));
        };
        if slot.engine.is_none() {
            let Some(record) = slot.record().filter(|record| !record.status.is_terminal()) else {
                return Err(Replay::Failed(internal("the instance is not running")));
            };
            let Some(entry) = shared.registry.orchestrator(&record.name) else {
                return Err(Replay::Failed(Failure::new(
                    FailureKind::NotRegistered,
                    format!(
                        "orchestrator `{}` is not registered with this runtime; register it to resume the instance",
                        record.name
                    ),
                )));
            };
            let mut engine = Engine::new(instance.clone(), record.execution, entry.run);
            if record.history_len > 0 {
                let history = match shared.store.history(instance, record.execution) {
                    Ok(history) => history,
                    Err(error @ durable_store::Error::Corrupt { .. }) => {
                        return Err(Replay::Failed(Failure::new(
                            FailureKind::Internal,
                            format!("the history cannot be read: {error}"),
                        )));
                    }
                    Err(error) => return Err(Replay::Transient(error)),
                };
                Metrics::add(&shared.metrics.replays, 1);
                Metrics::add(
                    &shared.metrics.history_events_replayed,
                    history.len() as u64,
                );
                engine.replay(&history).map_err(Replay::Failed)?;
            }
            slot.engine = Some(engine);
        }
        slot.engine
            .as_mut()
            .ok_or_else(|| Replay::Failed(internal("the engine vanished")))
    }

    /// Runs the engine over `live` and adds the turn's writes to the round.
    pub(super) fn turn(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        live: Vec<HistoryEvent>,
        round: &mut Round,
    ) {
        let limits = self.shared.config.limits;
        let engine = match self.hot_engine(instance) {
            Ok(engine) => engine,
            Err(Replay::Failed(failure)) => {
                return self.fail_execution(instance, now, failure, round);
            }
            Err(Replay::Transient(error)) => {
                let failure = internal(&format!("cannot read the history: {error}"));
                return self.fail_execution(instance, now, failure, round);
            }
        };
        let mut turn = engine.run_turn(now, live);
        let within = check_turn(
            &turn,
            engine.custom_status().as_ref(),
            TurnLimits {
                max_payload_bytes: limits.max_payload_bytes,
                max_actions: limits.max_actions_per_turn,
            },
        );
        if let Err(failure) = within {
            // The engine has moved past a turn that will not be committed: drop it, and end
            // the execution from what is stored.
            if let Some(slot) = self.slots.get_mut(instance) {
                slot.engine = None;
            }
            return self.fail_execution(instance, now, failure, round);
        }
        for (event, reason) in &turn.discarded {
            tracing::debug!(%instance, event = event.kind(), reason, "input discarded");
        }
        let outstanding = if turn.outcome.is_some() {
            engine.outstanding()
        } else {
            Vec::new()
        };
        if let Some(Outcome::ContinuedAsNew(_)) = turn.outcome {
            // Events the ended execution stored but never read go to the next one too.
            let stored = engine.take_stored_events();
            turn.unprocessed.extend(
                stored
                    .into_iter()
                    .map(|(name, input)| HistoryEvent::EventRaised { name, input }),
            );
        }
        Metrics::add(&self.shared.metrics.turns, 1);
        self.apply_turn(instance, now, turn, outstanding, round);
    }

    /// Fails the current execution without running its code: its history could not be
    /// replayed, or its last turn broke a limit.
    pub(super) fn fail_execution(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        failure: Failure,
        round: &mut Round,
    ) {
        tracing::warn!(%instance, %failure, "the execution fails without running its code");
        let outcome = Outcome::Failed(failure);
        self.end_without_code(instance, now, outcome, round);
    }

    /// Terminates an instance whose code cannot run (its orchestrator is not registered,
    /// or its history cannot be replayed): terminating runs no code.
    pub(super) fn terminate_without_code(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        reason: String,
        round: &mut Round,
    ) {
        self.end_without_code(instance, now, Outcome::Terminated(reason), round);
    }

    fn end_without_code(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        outcome: Outcome,
        round: &mut Round,
    ) {
        // What to cancel and release comes from the history itself (no engine to ask).
        let execution = self
            .slots
            .get(instance)
            .and_then(Slot::record)
            .filter(|record| record.history_len > 0)
            .map(|record| record.execution);
        let mut outstanding = Vec::new();
        if let Some(execution) = execution {
            // Also when reading it panics (a bug, or a damaged store): the execution ends
            // all the same.
            let read_history = || -> Result<Vec<HistoryEvent>, String> {
                match catch_unwind(AssertUnwindSafe(|| {
                    self.shared.store.history(instance, execution)
                })) {
                    Ok(read) => read.map_err(|error| error.to_string()),
                    Err(panic) => Err(format!("reading it panicked: {}", panic_message(&*panic))),
                }
            };
            let mut read = read_history();
            for _ in 0..3 {
                if read.is_ok() {
                    break;
                }
                read = read_history();
            }
            match read {
                Ok(history) => outstanding = outstanding_in(&history),
                Err(error) => tracing::error!(
                    %instance, %error,
                    "cannot read the history of an ending execution: its timers, activities \
                     and entity locks are not cleaned up"
                ),
            }
        }
        let turn = Turn {
            events: vec![
                HistoryEvent::OrchestratorStarted { at: now },
                outcome.to_event(),
            ],
            outcome: Some(outcome),
            ..Turn::default()
        };
        self.apply_turn(instance, now, turn, outstanding, round);
    }

    fn apply_turn(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        mut turn: Turn,
        mut outstanding: Vec<Outstanding>,
        round: &mut Round,
    ) {
        explain_tokio_panic(&mut turn);
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        let custom_status = slot.engine.as_ref().and_then(Engine::custom_status);
        let Some(record) = slot.record_mut() else {
            return;
        };
        let before = record.history_len;
        for event in turn.events {
            round.batch.append_history(
                instance.clone(),
                record.execution,
                record.history_len,
                event,
            );
            record.history_len += 1;
        }
        let warn_at = self.shared.config.limits.history_warning_events;
        if before < warn_at && record.history_len >= warn_at {
            Metrics::add(&self.shared.metrics.long_histories, 1);
            tracing::warn!(
                %instance,
                events = record.history_len,
                "the history of this execution passed {warn_at} events: replay after a restart reads all of it; \
                 consider continue_as_new (e.g. every N iterations of a loop) to start a fresh history"
            );
        }
        record.last_updated_at = now;
        if custom_status.is_some() {
            record.custom_status = custom_status;
        }
        let execution = record.execution;
        let ended = turn.outcome.is_some();
        for action in turn.actions {
            match action {
                // An activity called in the last turn without being awaited is fire-and-forget,
                // as in Durable Functions: it runs, and its result is dropped.
                Action::ScheduleActivity { id, .. } if ended => {
                    outstanding.retain(|task| *task != Outstanding::Activity(id));
                    self.perform(instance, execution, action, round);
                }
                // A timer nobody will wait for is not worth storing.
                Action::CreateTimer { .. } if ended => {}
                action => self.perform(instance, execution, action, round),
            }
        }
        if let Some(outcome) = turn.outcome {
            for task in outstanding {
                if let Outstanding::Locks(id, entities) = &task {
                    self.release_locks(instance, execution, *id, entities, round);
                }
                cancel(instance, execution, task, round);
            }
            let continued = matches!(outcome, Outcome::ContinuedAsNew(_));
            self.end_execution(instance, outcome, round);
            if continued {
                self.carry_over(instance, turn.unprocessed, round);
            }
        }
        if let Some(record) = self.slots.get(instance).and_then(Slot::record) {
            round.batch.put_instance(record.clone());
        }
        round.touched.push(instance.clone());
    }

    fn perform(
        &mut self,
        instance: &InstanceId,
        execution: ExecutionId,
        action: Action,
        round: &mut Round,
    ) {
        let action_kind = match action {
            Action::CallEntity { .. } => ActionKind::Call,
            _ => ActionKind::Other,
        };
        match action {
            Action::ScheduleActivity { id, name, input } => {
                let item = ActivityWorkItem {
                    instance: instance.clone(),
                    execution,
                    task: id,
                    name,
                    input,
                    restarts: 0,
                };
                round.batch.put_activity(item.clone());
                round.after.push(Dispatch::Activity(item));
            }
            Action::CreateTimer { id, fire_at } => {
                let timer = TimerRecord {
                    fire_at,
                    instance: instance.clone(),
                    execution,
                    task: id,
                };
                round.batch.put_timer(timer.clone());
                round.after.push(Dispatch::Timer(timer));
            }
            Action::CancelTimer { id, fire_at } => {
                let key = TimerKey {
                    fire_at,
                    instance: instance.clone(),
                    execution,
                    task: id,
                };
                round.batch.delete_timer(key.clone());
                round.after.push(Dispatch::CancelTimer(key));
            }
            Action::CallEntity {
                id,
                entity,
                operation,
                input,
            }
            | Action::SignalEntity {
                id,
                entity,
                operation,
                input,
            } => {
                let reply = matches!(action_kind, ActionKind::Call);
                let event = HistoryEvent::EntityOperation {
                    operation,
                    input,
                    caller: Some(EntityCaller {
                        instance: instance.clone(),
                        execution,
                        task: id,
                    }),
                    reply,
                };
                self.send_message(entity.instance_id(), None, event, round);
            }
            Action::AcquireLocks { id, entities } => {
                let holder = EntityCaller {
                    instance: instance.clone(),
                    execution,
                    task: id,
                };
                match entities.first() {
                    Some(first) => {
                        let target = first.instance_id();
                        let event = HistoryEvent::EntityLockRequest {
                            holder,
                            entities,
                            position: 0,
                        };
                        self.send_message(target, None, event, round);
                    }
                    // Nothing to lock: granted at once.
                    None => {
                        let event = HistoryEvent::LocksGranted { id, entities };
                        self.send_message(instance.clone(), Some(execution), event, round);
                    }
                }
            }
            Action::ReleaseLocks { id, entities } => {
                self.release_locks(instance, execution, id, &entities, round);
            }
            Action::StartSubOrchestration {
                id,
                name,
                instance: child,
                input,
            } => {
                let event = HistoryEvent::ExecutionStarted {
                    name,
                    input,
                    parent: Some(ParentRef {
                        instance: instance.clone(),
                        execution,
                        task: id,
                    }),
                };
                self.send_message(child, None, event, round);
            }
        }
    }

    /// Tells each entity of lock task `id` that the lock is released.
    pub(super) fn release_locks(
        &mut self,
        instance: &InstanceId,
        execution: ExecutionId,
        id: TaskId,
        entities: &[EntityId],
        round: &mut Round,
    ) {
        for entity in entities {
            let holder = EntityCaller {
                instance: instance.clone(),
                execution,
                task: id,
            };
            let event = HistoryEvent::EntityLockRelease { holder };
            self.send_message(entity.instance_id(), None, event, round);
        }
    }

    /// Records the end of the current execution and tells its parent.
    fn end_execution(&mut self, instance: &InstanceId, outcome: Outcome, round: &mut Round) {
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        slot.engine = None;
        let Some(record) = slot.record_mut() else {
            return;
        };
        Metrics::add(&self.shared.metrics.instances_ended, 1);
        if let Some(fire_at) = record.scheduled_start.take() {
            // Ended before its scheduled start came due.
            round.batch.delete_timer(TimerKey {
                fire_at,
                instance: instance.clone(),
                execution: record.execution,
                task: SCHEDULED_START_TASK,
            });
        }
        let result: Result<Json, Failure> = match outcome {
            Outcome::Completed(output) => {
                record.status = RuntimeStatus::Completed;
                record.output = Some(output.clone());
                Ok(output)
            }
            Outcome::Failed(failure) => {
                record.status = RuntimeStatus::Failed;
                record.failure = Some(failure.clone());
                Err(failure)
            }
            Outcome::Terminated(reason) => {
                let failure = Failure::new(FailureKind::Terminated, reason);
                record.status = RuntimeStatus::Terminated;
                record.failure = Some(failure.clone());
                Err(failure)
            }
            Outcome::ContinuedAsNew(input) => {
                // The old history goes; the next execution starts from a stored message, so
                // a crash before its first turn loses nothing.
                round
                    .batch
                    .delete_history(instance.clone(), record.execution, record.history_len);
                let next = self.shared.new_execution();
                round.execution_floor = round.execution_floor.max(Some(next));
                record.execution = next;
                record.history_len = 0;
                record.input = input.clone();
                record.output = None;
                let event = HistoryEvent::ExecutionStarted {
                    name: record.name.clone(),
                    input,
                    parent: record.parent.clone(),
                };
                let execution = record.execution;
                self.send_message(instance.clone(), Some(execution), event, round);
                return;
            }
        };
        let parent = record.parent.clone();
        round.after.push(Dispatch::Ended(instance.clone()));
        if let Some(parent) = parent {
            let event = match result {
                Ok(output) => HistoryEvent::SubOrchestrationCompleted {
                    id: parent.task,
                    output,
                },
                Err(failure) => HistoryEvent::SubOrchestrationFailed {
                    id: parent.task,
                    failure,
                },
            };
            self.send_message(parent.instance, Some(parent.execution), event, round);
        }
    }

    /// Hands the external events the ended execution did not read to the next one: no event
    /// is lost across `continue_as_new`.
    fn carry_over(
        &mut self,
        instance: &InstanceId,
        unprocessed: Vec<HistoryEvent>,
        round: &mut Round,
    ) {
        let Some(execution) = self
            .slots
            .get(instance)
            .and_then(Slot::record)
            .map(|record| record.execution)
        else {
            return;
        };
        for event in unprocessed {
            if matches!(event, HistoryEvent::EventRaised { .. }) {
                self.send_message(instance.clone(), Some(execution), event, round);
            }
        }
    }
}

/// Whether an action waits for an answer.
enum ActionKind {
    Call,
    Other,
}

/// Orchestrators are polled outside any tokio runtime, so tokio calls reached through a
/// helper function (where `#[orchestrator]` cannot see them) panic; say what to do instead.
fn explain_tokio_panic(turn: &mut Turn) {
    let failure = match &mut turn.outcome {
        Some(Outcome::Failed(failure)) if failure.kind == FailureKind::Panic => failure,
        _ => return,
    };
    if !failure.message.contains("Tokio") {
        return;
    }
    failure.message.push_str(
        ". Orchestrators run outside any tokio runtime, on the runtime's orchestration threads, \
         so tokio cannot be used in them (not even through a helper function): wait with \
         `ctx.sleep`/`ctx.create_timer`, and do I/O and spawned work in activities",
    );
    let failure = failure.clone();
    if let Some(event @ HistoryEvent::ExecutionFailed { .. }) = turn.events.last_mut() {
        *event = HistoryEvent::ExecutionFailed { failure };
    }
}

/// Cancels work an ended execution left behind: its activities will not run again after
/// a restart and its timers will not fire.
fn cancel(instance: &InstanceId, execution: ExecutionId, task: Outstanding, round: &mut Round) {
    match task {
        // Sent by `release_locks`, which needs the shard.
        Outstanding::Locks(..) => {}
        Outstanding::Activity(task) => round.batch.delete_activity(ActivityKey {
            instance: instance.clone(),
            execution,
            task,
        }),
        Outstanding::Timer(task, fire_at) => {
            let key = TimerKey {
                fire_at,
                instance: instance.clone(),
                execution,
                task,
            };
            round.batch.delete_timer(key.clone());
            round.after.push(Dispatch::CancelTimer(key));
        }
        // A child runs on; its result will find the parent ended and be dropped.
        Outstanding::SubOrchestration(_) => {}
    }
}

fn internal(message: &str) -> Failure {
    Failure::new(FailureKind::Internal, message.to_owned())
}
