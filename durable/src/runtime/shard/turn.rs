//! Running a turn: bring the instance's engine into memory (replaying its history if it is
//! not hot), feed it the turn's inputs, and turn what comes out into writes — history
//! appended, one write per action (work stored and dispatched after the commit, messages
//! to other instances), the instance record, and at the end of an execution its leftovers
//! cancelled and its parent told.

use super::slot::{Loaded, Orchestration};
use super::writes::{Env, Writes};
use crate::runtime::metrics::Metrics;
use crate::runtime::writer::Dispatch;
use durable_core::{Action, Engine, Ledger, Outcome, Outstanding, Turn, check_turn, panic_message};
use durable_types::{
    ActivityKey, ActivityWorkItem, EntityCaller, EntityId, EntityMessage, ExecutionId, Failure,
    FailureKind, HistoryEvent, InstanceId, InstanceRecord, Json, Message, ParentRef, RuntimeStatus,
    TaskId, TimerKey, TimerPurpose, TimerRecord,
};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Why an engine could not be brought back.
pub(crate) enum Replay {
    /// The store could not be read just now; try again later.
    Transient(durable_store::Error),
    /// It never will: the history is corrupt or diverges from the code, or the
    /// orchestrator is not registered.
    Failed(Failure),
}

/// The instance's engine, replaying its history first if it is not in memory.
pub(crate) fn hot_engine<'a>(
    orchestration: &'a mut Orchestration,
    instance: &InstanceId,
    env: &Env,
) -> Result<&'a mut Engine, Replay> {
    if orchestration.engine.is_none() {
        let record = orchestration
            .record
            .record()
            .filter(|record| !record.status.is_terminal())
            .expect("only a running instance has an engine");
        orchestration.engine = Some(replay(record, instance, env)?);
    }
    Ok(orchestration
        .engine
        .as_mut()
        .expect("the engine was just put in place"))
}

/// A new engine for the instance's current execution, brought to where its history ends.
fn replay(record: &InstanceRecord, instance: &InstanceId, env: &Env) -> Result<Engine, Replay> {
    let Some(entry) = env.registry.orchestrator(&record.name) else {
        return Err(Replay::Failed(Failure::new(
            FailureKind::NotRegistered,
            format!(
                "orchestrator `{}` is not registered with this runtime; register it to resume the instance",
                record.name
            ),
        )));
    };
    let mut engine = Engine::new(instance.clone(), record.execution, entry.run);
    if record.history_len == 0 {
        return Ok(engine);
    }
    let history = match env.store.history(instance, record.execution) {
        Ok(history) => history,
        Err(error @ durable_store::Error::Corrupt { .. }) => {
            let message = format!("the history cannot be read: {error}");
            return Err(Replay::Failed(Failure::new(FailureKind::Internal, message)));
        }
        Err(error) => return Err(Replay::Transient(error)),
    };
    Metrics::add(&env.metrics.replays, 1);
    let replayed = &env.metrics.history_events_replayed;
    Metrics::add(replayed, history.len() as u64);
    engine.replay(&history).map_err(Replay::Failed)?;
    Ok(engine)
}

/// Runs the engine over `live` and adds the turn's writes.
pub(crate) fn run(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    live: Vec<HistoryEvent>,
    env: &Env,
    writes: &mut Writes,
) {
    let engine = match hot_engine(orchestration, instance, env) {
        Ok(engine) => engine,
        Err(Replay::Failed(failure)) => {
            return fail_execution(orchestration, instance, failure, env, writes);
        }
        Err(Replay::Transient(error)) => {
            let failure = internal(&format!("cannot read the history: {error}"));
            return fail_execution(orchestration, instance, failure, env, writes);
        }
    };
    let mut turn = engine.run_turn(env.now, live);
    let custom_status = engine.custom_status();
    if let Err(failure) = check_turn(&turn, custom_status.as_ref(), &env.config.limits) {
        // The engine has moved past a turn that will not be committed: drop it, and end
        // the execution from what is stored.
        orchestration.engine = None;
        return fail_execution(orchestration, instance, failure, env, writes);
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
        let stored = stored
            .into_iter()
            .map(|(name, input)| HistoryEvent::EventRaised { name, input });
        turn.unprocessed.extend(stored);
    }
    Metrics::add(&env.metrics.turns, 1);
    apply(
        orchestration,
        instance,
        turn,
        outstanding,
        custom_status,
        env,
        writes,
    );
}

/// Fails the current execution without running its code: its history could not be
/// replayed, or its last turn broke a limit.
pub(crate) fn fail_execution(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    failure: Failure,
    env: &Env,
    writes: &mut Writes,
) {
    tracing::warn!(%instance, %failure, "the execution fails without running its code");
    let outcome = Outcome::Failed(failure);
    end_without_code(orchestration, instance, outcome, env, writes);
}

/// Terminates an instance whose code cannot run (its orchestrator is not registered,
/// or its history cannot be replayed): terminating runs no code.
pub(crate) fn terminate_without_code(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    reason: String,
    env: &Env,
    writes: &mut Writes,
) {
    let outcome = Outcome::Terminated(reason);
    end_without_code(orchestration, instance, outcome, env, writes);
}

fn end_without_code(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    outcome: Outcome,
    env: &Env,
    writes: &mut Writes,
) {
    // What to cancel and release comes from the history itself (no engine to ask).
    let execution = orchestration
        .record
        .record()
        .filter(|record| record.history_len > 0)
        .map(|record| record.execution);
    let outstanding = match execution {
        Some(execution) => outstanding_in_store(instance, execution, env),
        None => Vec::new(),
    };
    let turn = Turn {
        events: vec![
            HistoryEvent::OrchestratorStarted { at: env.now },
            outcome.to_event(),
        ],
        outcome: Some(outcome),
        ..Turn::default()
    };
    apply(
        orchestration,
        instance,
        turn,
        outstanding,
        None,
        env,
        writes,
    );
}

/// What the stored history of `execution` leaves outstanding. Reading it is tried a few
/// times, and a failure (even a panic: a bug, or a damaged store) is logged: the execution
/// ends all the same, without the cleanup.
fn outstanding_in_store(
    instance: &InstanceId,
    execution: ExecutionId,
    env: &Env,
) -> Vec<Outstanding> {
    let read_history = || -> Result<Vec<HistoryEvent>, String> {
        match catch_unwind(AssertUnwindSafe(|| env.store.history(instance, execution))) {
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
        Ok(history) => Ledger::from_history(&history).outstanding(),
        Err(error) => {
            tracing::error!(
                %instance, %error,
                "cannot read the history of an ending execution: its timers, activities \
                 and entity locks are not cleaned up"
            );
            Vec::new()
        }
    }
}

/// Writes what a turn did: its history, its actions, and, if it ended the execution, the
/// end; then the instance record.
fn apply(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    mut turn: Turn,
    mut outstanding: Vec<Outstanding>,
    custom_status: Option<Json>,
    env: &Env,
    writes: &mut Writes,
) {
    explain_tokio_panic(&mut turn);
    let record = orchestration
        .record
        .record_mut()
        .expect("only an instance that exists has a turn");
    append_history(record, turn.events, env, writes);
    record.last_updated_at = env.now;
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
                write_action(instance, execution, action, env, writes);
            }
            // A timer nobody will wait for is not worth storing.
            Action::CreateTimer { .. } if ended => {}
            action => write_action(instance, execution, action, env, writes),
        }
    }
    if let Some(outcome) = turn.outcome {
        for task in outstanding {
            cancel(instance, execution, task, env, writes);
        }
        let continued = matches!(outcome, Outcome::ContinuedAsNew(_));
        end_execution(orchestration, instance, outcome, env, writes);
        if continued {
            carry_over(orchestration, instance, turn.unprocessed, env, writes);
        }
    }
    if let Some(record) = orchestration.record.record() {
        writes.batch.put_instance(record.clone());
    }
    writes.touches = true;
}

/// Appends a turn's events to the history, numbering them on from the record, and warns
/// once when the history grows long.
fn append_history(
    record: &mut InstanceRecord,
    events: Vec<HistoryEvent>,
    env: &Env,
    writes: &mut Writes,
) {
    let before = record.history_len;
    for event in events {
        let (instance, execution) = (record.id.clone(), record.execution);
        writes
            .batch
            .append_history(instance, execution, record.history_len, event);
        record.history_len += 1;
    }
    let warn_at = env.config.limits.history_warning_events;
    if before < warn_at && record.history_len >= warn_at {
        Metrics::add(&env.metrics.long_histories, 1);
        tracing::warn!(
            instance = %record.id,
            events = record.history_len,
            "the history of this execution passed {warn_at} events: replay after a restart reads all of it; \
             consider continue_as_new (e.g. every N iterations of a loop) to start a fresh history"
        );
    }
}

/// Writes one action of execution `execution` of `instance`: the work it stores and what
/// happens once that is durable.
fn write_action(
    instance: &InstanceId,
    execution: ExecutionId,
    action: Action,
    env: &Env,
    writes: &mut Writes,
) {
    let caller = |task| EntityCaller {
        instance: instance.clone(),
        execution,
        task,
    };
    match action {
        Action::ScheduleActivity {
            id,
            name,
            input,
            retry,
        } => {
            let item = ActivityWorkItem::new(instance.clone(), execution, id, name, input, retry);
            schedule_activity(item, writes);
        }
        Action::CancelActivity { id } => cancel_activity(instance, execution, id, writes),
        Action::CreateTimer { id, fire_at } => create_timer(
            TimerRecord {
                fire_at,
                instance: instance.clone(),
                execution,
                purpose: TimerPurpose::Task(id),
            },
            writes,
        ),
        Action::CancelTimer { id, fire_at } => {
            let purpose = TimerPurpose::Task(id);
            cancel_timer(instance, execution, purpose, fire_at, writes);
        }
        Action::CallEntity {
            id,
            entity,
            operation,
            input,
        } => call_entity(caller(id), entity, operation, input, true, env, writes),
        Action::SignalEntity {
            id,
            entity,
            operation,
            input,
        } => call_entity(caller(id), entity, operation, input, false, env, writes),
        Action::AcquireLocks { id, entities } => {
            acquire_locks(caller(id), entities, env, writes);
        }
        Action::ReleaseLocks { id, entities } => release_locks(&caller(id), &entities, env, writes),
        Action::StartSubOrchestration {
            id,
            name,
            instance: child,
            input,
        } => {
            let parent = ParentRef {
                instance: instance.clone(),
                execution,
                task: id,
            };
            start_sub_orchestration(parent, child, name, input, env, writes);
        }
    }
}

/// Sends the start of a sub-orchestration to its instance.
fn start_sub_orchestration(
    parent: ParentRef,
    child: InstanceId,
    name: String,
    input: Json,
    env: &Env,
    writes: &mut Writes,
) {
    let event = HistoryEvent::ExecutionStarted {
        name,
        input,
        parent: Some(parent),
        generation: 1,
    };
    writes.send_event(env.ids, child, None, event);
}

/// Stores an activity's work item and, once that is durable, runs it.
fn schedule_activity(item: ActivityWorkItem, writes: &mut Writes) {
    writes.batch.put_activity(item.clone());
    writes.after.push(Dispatch::Activity(item));
}

/// Stores a timer and, once that is durable, arms it.
fn create_timer(timer: TimerRecord, writes: &mut Writes) {
    writes.batch.put_timer(timer.clone());
    writes.after.push(Dispatch::Timer(timer));
}

/// Forgets an activity the orchestration no longer waits for: its work item goes (so it
/// does not run again after a restart) and, once that is durable, a run in progress is
/// told to stop.
fn cancel_activity(
    instance: &InstanceId,
    execution: ExecutionId,
    task: TaskId,
    writes: &mut Writes,
) {
    let key = ActivityKey {
        instance: instance.clone(),
        execution,
        task,
    };
    writes.batch.delete_activity(key.clone());
    writes.after.push(Dispatch::CancelActivity(key));
}

fn cancel_timer(
    instance: &InstanceId,
    execution: ExecutionId,
    purpose: TimerPurpose,
    fire_at: durable_types::Timestamp,
    writes: &mut Writes,
) {
    let key = TimerKey {
        fire_at,
        instance: instance.clone(),
        execution,
        purpose,
    };
    writes.batch.delete_timer(key.clone());
    writes.after.push(Dispatch::CancelTimer(key));
}

/// Sends an operation to an entity: a call (`reply`: the caller waits for the result) or
/// a signal.
fn call_entity(
    caller: EntityCaller,
    entity: EntityId,
    operation: String,
    input: Json,
    reply: bool,
    env: &Env,
    writes: &mut Writes,
) {
    let message = EntityMessage::Operation {
        operation,
        input,
        caller: Some(caller),
        reply,
    };
    writes.send(env.ids, entity.instance_id(), Message::Entity(message));
}

/// Sends a lock request to the first entity (which passes it on); nothing to lock is
/// granted at once.
fn acquire_locks(holder: EntityCaller, entities: Vec<EntityId>, env: &Env, writes: &mut Writes) {
    match entities.first() {
        Some(first) => {
            let target = first.instance_id();
            let message = EntityMessage::LockRequest {
                holder,
                entities,
                position: 0,
            };
            writes.send(env.ids, target, Message::Entity(message));
        }
        None => {
            let event = HistoryEvent::LocksGranted {
                id: holder.task,
                entities,
            };
            writes.send_event(env.ids, holder.instance, Some(holder.execution), event);
        }
    }
}

/// Records the end of the current execution and tells its parent; after
/// `continue_as_new`, starts the next execution instead.
fn end_execution(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    outcome: Outcome,
    env: &Env,
    writes: &mut Writes,
) {
    orchestration.engine = None;
    let record = orchestration
        .record
        .record_mut()
        .expect("only an instance that exists ends");
    Metrics::add(&env.metrics.instances_ended, 1);
    if let Some(fire_at) = record.scheduled_start.take() {
        // Ended before its scheduled start came due.
        let purpose = TimerPurpose::ScheduledStart;
        cancel_timer(instance, record.execution, purpose, fire_at, writes);
    }
    let result = match outcome {
        Outcome::ContinuedAsNew(input) => return continue_as_new(record, input, env, writes),
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
    };
    writes.after.push(Dispatch::Ended(instance.clone()));
    if let Some(parent) = record.parent.clone() {
        tell_parent(parent, result, env, writes);
    }
}

/// The old history goes; the next execution starts from a stored message, so a crash
/// before its first turn loses nothing.
fn continue_as_new(record: &mut InstanceRecord, input: Json, env: &Env, writes: &mut Writes) {
    let (instance, execution) = (record.id.clone(), record.execution);
    writes
        .batch
        .delete_history(instance.clone(), execution, record.history_len);
    record.execution = writes.new_execution(env.ids);
    record.history_len = 0;
    record.input = input.clone();
    record.output = None;
    record.generation = record.generation.saturating_add(1);
    let event = HistoryEvent::ExecutionStarted {
        name: record.name.clone(),
        input,
        parent: record.parent.clone(),
        generation: record.generation,
    };
    writes.send_event(env.ids, instance, Some(record.execution), event);
}

/// Tells a sub-orchestration's parent how it ended.
fn tell_parent(parent: ParentRef, result: Result<Json, Failure>, env: &Env, writes: &mut Writes) {
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
    writes.send_event(env.ids, parent.instance, Some(parent.execution), event);
}

/// Hands the external events the ended execution did not read to the next one: no event
/// is lost across `continue_as_new`.
fn carry_over(
    orchestration: &Orchestration,
    instance: &InstanceId,
    unprocessed: Vec<HistoryEvent>,
    env: &Env,
    writes: &mut Writes,
) {
    let Loaded::Present(record) = &orchestration.record else {
        unreachable!("an execution that continued as new has a record")
    };
    for event in unprocessed {
        if matches!(event, HistoryEvent::EventRaised { .. }) {
            writes.send_event(env.ids, instance.clone(), Some(record.execution), event);
        }
    }
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
/// a restart, its timers will not fire, its locks are released.
fn cancel(
    instance: &InstanceId,
    execution: ExecutionId,
    task: Outstanding,
    env: &Env,
    writes: &mut Writes,
) {
    match task {
        Outstanding::Locks(id, entities) => {
            let holder = EntityCaller {
                instance: instance.clone(),
                execution,
                task: id,
            };
            release_locks(&holder, &entities, env, writes);
        }
        Outstanding::Activity(task) => cancel_activity(instance, execution, task, writes),
        Outstanding::Timer(task, fire_at) => {
            let purpose = TimerPurpose::Task(task);
            cancel_timer(instance, execution, purpose, fire_at, writes);
        }
        // A child runs on; its result will find the parent ended and be dropped.
        Outstanding::SubOrchestration(_) => {}
    }
}

/// Tells each entity of a lock request that `holder` releases its lock.
pub(crate) fn release_locks(
    holder: &EntityCaller,
    entities: &[durable_types::EntityId],
    env: &Env,
    writes: &mut Writes,
) {
    for entity in entities {
        let message = EntityMessage::LockRelease {
            holder: holder.clone(),
        };
        writes.send(env.ids, entity.instance_id(), Message::Entity(message));
    }
}

fn internal(message: &str) -> Failure {
    Failure::new(FailureKind::Internal, message.to_owned())
}
