//! One step of an orchestration instance: bring what the shard knows of it up to date
//! (its record, its engine), route each input that arrived by the table of `routing.rs` —
//! into the turn, start or schedule an execution, park until the instance can take it,
//! refuse, or drop as stale — and run the turn. The step returns its writes; the shard
//! commits them.

use super::input::{Content, Input, Source};
use super::routing::{Addressed, Decision, Intent, Lifecycle, Refusal, after, decide};
use super::slot::{Kind, Loaded, Orchestration, Slot};
use super::slow;
use super::turn::{self, Replay, release_locks};
use super::writes::{Env, Next, Step, Writes};
use crate::runtime::handle::Rejection;
use crate::runtime::metrics::Metrics;
use durable_core::Engine;
use durable_types::{
    EntityCaller, Failure, FailureKind, HistoryEvent, InstanceId, InstanceRecord, Json, ParentRef,
    RuntimeStatus, TimerPurpose, TimerRecord,
};
use std::time::Instant;

/// Runs one step of orchestration `instance` over the inputs it has received.
pub(crate) fn step(slot: &mut Slot, instance: &InstanceId, env: &Env) -> Step {
    let mut writes = Writes::default();
    let blocked = match prepare(slot, instance, env) {
        Readiness::Ready => None,
        Readiness::Later => return Step::new(writes, Next::Retry),
        Readiness::Blocked(failure) => Some(failure),
        Readiness::Damaged(error) => {
            refuse_while_damaged(slot, instance, error, &mut writes);
            return Step::new(writes, Next::Wait);
        }
    };
    let Kind::Orchestration(orchestration) = &mut slot.kind else {
        unreachable!("`{instance}` is an entity, stepped as an orchestration")
    };
    if let Some(failure) = orchestration.fail_with.take() {
        if !is_over(orchestration.lifecycle()) {
            turn::fail_execution(orchestration, instance, failure, env, &mut writes);
        }
        // Its inputs meet the ended instance in the next round.
        let next = if slot.inputs.is_empty() {
            Next::Wait
        } else {
            Next::Again
        };
        return Step::new(writes, next);
    }
    let mut inputs = std::mem::take(&mut slot.inputs);
    order(&mut inputs, orchestration.lifecycle());
    let mut routed = Routed {
        blocked,
        ..Routed::default()
    };
    for input in inputs {
        route(
            orchestration,
            instance,
            input,
            env,
            &mut routed,
            &mut writes,
        );
    }
    slot.inputs = std::mem::take(&mut routed.parked);
    if !run_live(orchestration, instance, &mut routed, env, &mut writes) {
        return Step::new(writes, Next::Wait);
    }
    for source in routed.consumed {
        writes.consume(source);
    }
    // Inputs that waited for a start or a resume go in the next round, now that the
    // instance can take them (or, if it ended, be dropped).
    let can_take = matches!(
        orchestration.lifecycle(),
        Lifecycle::Running | Lifecycle::Ended(_) | Lifecycle::Absent
    );
    let next = if !slot.inputs.is_empty() && can_take {
        Next::Again
    } else {
        Next::Wait
    };
    Step::new(writes, next)
}

/// Whether the instance does not exist or has ended.
fn is_over(lifecycle: Lifecycle) -> bool {
    matches!(lifecycle, Lifecycle::Absent | Lifecycle::Ended(_))
}

/// The inputs of one turn, as routing sorts them.
#[derive(Default)]
struct Routed {
    live: Vec<HistoryEvent>,
    consumed: Vec<Source>,
    parked: Vec<Input>,
    /// Where the instance stands after the inputs routed so far (a start makes it
    /// running); `None` until an input changed it.
    lifecycle: Option<Lifecycle>,
    /// Why the current execution's code cannot run, if it cannot.
    blocked: Option<Failure>,
}

/// Whether an instance's code can run this step.
enum Readiness {
    /// Yes (its engine is hot, or it needs none).
    Ready,
    /// Not now: a store read failed or an earlier commit is still in flight. Its inputs
    /// wait for a later round.
    Later,
    /// Never: its history cannot be replayed or its orchestrator is not registered. It can
    /// still be terminated (or fail, with this reason).
    Blocked(Failure),
    /// Its record cannot be decoded: nothing can be done with it. Commands to it are
    /// refused with the error, which names it; what is stored for it stays in the store.
    Damaged(durable_store::Error),
}

/// Loads the record and, for a running instance with history, replays its engine.
fn prepare(slot: &mut Slot, instance: &InstanceId, env: &Env) -> Readiness {
    if slot.stale {
        if slot.inflight > 0 {
            return Readiness::Later; // `committed` queues it again
        }
        // Forget what memory held; the store is up to date now.
        slot.forget();
        slot.stale = false;
    }
    let Kind::Orchestration(orchestration) = &mut slot.kind else {
        unreachable!("`{instance}` is an entity, stepped as an orchestration")
    };
    if !orchestration.record.is_loaded() {
        match env.store.instance(instance) {
            Ok(Some(record)) => orchestration.record = Loaded::Present(record),
            Ok(None) => orchestration.record = Loaded::Absent,
            Err(error @ durable_store::Error::Corrupt { .. }) => {
                return Readiness::Damaged(error);
            }
            Err(error) => {
                tracing::warn!(%instance, %error, "cannot read the instance record; retrying");
                return Readiness::Later;
            }
        }
    }
    if orchestration.fail_with.is_some() {
        return Readiness::Ready; // failed without replaying
    }
    let needs_replay = orchestration.engine.is_none()
        && orchestration
            .record
            .record()
            .is_some_and(|record| !record.status.is_terminal() && record.history_len > 0);
    if !needs_replay {
        return Readiness::Ready;
    }
    match turn::hot_engine(orchestration, instance, env) {
        Ok(_) => Readiness::Ready,
        Err(Replay::Transient(error)) => {
            tracing::warn!(%instance, %error, "cannot read the history; retrying");
            Readiness::Later
        }
        Err(Replay::Failed(failure)) => Readiness::Blocked(failure),
    }
}

/// The instance's record cannot be decoded: clients hear why; what is stored for it stays
/// in the store, and the record is read again next time (it may have been repaired).
fn refuse_while_damaged(
    slot: &mut Slot,
    instance: &InstanceId,
    error: durable_store::Error,
    writes: &mut Writes,
) {
    tracing::error!(
        %instance, %error,
        "the instance's record is damaged: commands to it are refused, what is stored for it stays"
    );
    let rejection = Rejection::from(error);
    for input in std::mem::take(&mut slot.inputs) {
        if let Source::Client(reply) = input.source {
            writes.refuse(reply, rejection.clone());
        }
    }
    slot.forget();
}

/// Runs the turn of the live inputs, if there are any. Returns whether the routed inputs
/// are to be consumed: not when the code cannot run and the inputs must wait in the store
/// for a runtime that can run them (clients hear why now).
fn run_live(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    routed: &mut Routed,
    env: &Env,
    writes: &mut Writes,
) -> bool {
    let live = std::mem::take(&mut routed.live);
    if live.is_empty() {
        return true;
    }
    let Some(failure) = routed.blocked.clone() else {
        let replayed = orchestration.engine.is_none();
        let started = Instant::now();
        turn::run(orchestration, instance, live, env, writes);
        let elapsed = started.elapsed();
        let name = orchestration
            .record
            .record()
            .map_or("", |record| &record.name);
        slow::turn_took(elapsed, instance, name, replayed, env);
        return true;
    };
    if run_blocked(orchestration, instance, live, failure.clone(), env, writes) {
        return true;
    }
    for source in std::mem::take(&mut routed.consumed) {
        if let Source::Client(reply) = source {
            writes.refuse(reply, Rejection::CannotRun(failure.clone()));
        }
    }
    false
}

/// Handles a turn whose code cannot run: a terminate ends it all the same; otherwise an
/// unregistered orchestrator leaves its inputs stored (for a runtime that has it), and a
/// history that cannot be replayed fails the execution. Returns whether the inputs were
/// consumed.
fn run_blocked(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    live: Vec<HistoryEvent>,
    failure: Failure,
    env: &Env,
    writes: &mut Writes,
) -> bool {
    let terminate = live.into_iter().find_map(|event| match event {
        HistoryEvent::ExecutionTerminated { reason } => Some(reason),
        _ => None,
    });
    if let Some(reason) = terminate {
        turn::terminate_without_code(orchestration, instance, reason, env, writes);
        return true;
    }
    if failure.kind != FailureKind::NotRegistered {
        turn::fail_execution(orchestration, instance, failure, env, writes);
        return true;
    }
    tracing::error!(%instance, %failure, "cannot run the instance; its inputs stay stored");
    false
}

/// Applies the decision table to one input.
fn route(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    input: Input,
    env: &Env,
    routed: &mut Routed,
    writes: &mut Writes,
) {
    let lifecycle = routed
        .lifecycle
        .unwrap_or_else(|| orchestration.lifecycle());
    let intent = Intent::of(&input, env.now);
    let current = orchestration.record.record().map(|record| record.execution);
    let addressed = Addressed::of(input.content.execution(), current);
    match decide(lifecycle, intent, addressed) {
        Decision::Begin => {
            begin(orchestration, instance, input, env, routed, writes);
            routed.lifecycle = Some(orchestration.lifecycle());
        }
        Decision::Schedule => {
            schedule(orchestration, instance, input, env, writes);
            routed.lifecycle = Some(orchestration.lifecycle());
        }
        Decision::Replace => replace(orchestration, instance, input, env, routed, writes),
        Decision::Live => {
            go_live(orchestration, input, intent, routed);
            routed.lifecycle = Some(after(lifecycle, intent));
        }
        Decision::Park => routed.parked.push(park(instance, input, env, writes)),
        Decision::Ack | Decision::Drop => {
            release_stale_grant(instance, &input, env, writes);
            routed.consumed.push(input.source);
        }
        Decision::Refuse(refusal) => {
            release_stale_grant(instance, &input, env, writes);
            let status = orchestration.record.record().map(|record| record.status);
            refuse_with(instance, input, rejection(refusal, status), env, writes);
        }
    }
}

/// Replaces the execution that has not ended with the one `input` starts
/// (`IdReuse::TerminateRunning`).
fn replace(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    input: Input,
    env: &Env,
    routed: &mut Routed,
    writes: &mut Writes,
) {
    let name = Start::of(&input.content).name;
    if !env.registry.has_orchestrator(&name) {
        // Refused before the running execution is touched.
        return refuse_unregistered(instance, &name, input, env, writes);
    }
    end_to_replace(orchestration, instance, env, routed, writes);
    // It has ended now: the start begins or schedules the next execution.
    route(orchestration, instance, input, env, routed, writes);
}

/// Ends the execution a start replaces (`IdReuse::TerminateRunning`): the inputs routed
/// before the start and a terminate run as one turn now, so that the replacement begins in
/// the same step and commits with it — no commit holds the one without the other.
fn end_to_replace(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    env: &Env,
    routed: &mut Routed,
    writes: &mut Writes,
) {
    let reason = "replaced by a new start of its id (IdReuse::TerminateRunning)".to_owned();
    routed
        .live
        .push(HistoryEvent::ExecutionTerminated { reason });
    // With a terminate among them, the live inputs always end the execution, and so are
    // consumed, whether its code can run or not.
    let consumed = run_live(orchestration, instance, routed, env, writes);
    // Routing the start again must not find it running (and replace it again, forever).
    assert!(
        consumed && is_over(orchestration.lifecycle()),
        "a terminate did not end `{instance}`"
    );
    for source in std::mem::take(&mut routed.consumed) {
        writes.consume(source);
    }
    // The replacement is a new execution: whatever kept the old one's code from running
    // does not apply to it.
    routed.blocked = None;
    routed.lifecycle = Some(orchestration.lifecycle());
}

/// What refusing an input says, given the instance's status.
fn rejection(refusal: Refusal, status: Option<RuntimeStatus>) -> Rejection {
    match (refusal, status) {
        (Refusal::AlreadyExists, Some(status)) => Rejection::AlreadyExists { status },
        (Refusal::NotRunning, Some(status)) => Rejection::NotRunning { status },
        _ => Rejection::NotFound,
    }
}

/// Feeds an input to this step's turn, updating the record for a lifecycle change.
fn go_live(orchestration: &mut Orchestration, input: Input, intent: Intent, routed: &mut Routed) {
    let record = orchestration
        .record
        .record_mut()
        .expect("routing sends live inputs only to instances that exist");
    let event = match input.content {
        Content::ScheduledStartDue { .. } => {
            // The scheduled start came due: the execution starts now.
            record.status = RuntimeStatus::Running;
            record.scheduled_start = None;
            HistoryEvent::ExecutionStarted {
                name: record.name.clone(),
                input: record.input.clone(),
                parent: record.parent.clone(),
                generation: record.generation,
            }
        }
        Content::Event { event, .. } => {
            match intent {
                Intent::Suspend => record.status = RuntimeStatus::Suspended,
                Intent::Resume => record.status = RuntimeStatus::Running,
                _ => {}
            }
            event
        }
        Content::Entity(message) => {
            unreachable!("a {} message routed to an orchestration", message.kind())
        }
    };
    routed.live.push(event);
    routed.consumed.push(input.source);
}

/// What a start asks for: the orchestrator, its input and the parent waiting for it.
struct Start {
    name: String,
    input: Json,
    parent: Option<ParentRef>,
}

impl Start {
    /// The start an input carries; routing decides to begin or schedule starts only.
    fn of(content: &Content) -> Start {
        match content {
            Content::Event {
                event:
                    HistoryEvent::ExecutionStarted {
                        name,
                        input,
                        parent,
                        ..
                    },
                ..
            } => Start {
                name: name.clone(),
                input: input.clone(),
                parent: parent.clone(),
            },
            other => unreachable!("routing began an execution with {}", other.kind()),
        }
    }
}

/// Starts a new execution of an absent or ended instance.
fn begin(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    input: Input,
    env: &Env,
    routed: &mut Routed,
    writes: &mut Writes,
) {
    let start = Start::of(&input.content);
    let Some(entry) = env.registry.orchestrator(&start.name) else {
        refuse_unregistered(instance, &start.name, input, env, writes);
        return;
    };
    let record = new_record(orchestration, instance, start, env, writes);
    orchestration.engine = Some(Engine::new(instance.clone(), record.execution, entry.run));
    orchestration.record = Loaded::Present(record);
    Metrics::add(&env.metrics.instances_started, 1);
    let Content::Event { event, .. } = input.content else {
        unreachable!("a start is an event")
    };
    routed.live.push(event);
    routed.consumed.push(input.source);
}

/// Records a scheduled start: a pending instance, and the timer that starts it.
fn schedule(
    orchestration: &mut Orchestration,
    instance: &InstanceId,
    input: Input,
    env: &Env,
    writes: &mut Writes,
) {
    let start = Start::of(&input.content);
    let start_at = input
        .terms
        .at
        .expect("routing schedules only starts with a time");
    if !env.registry.has_orchestrator(&start.name) {
        let name = start.name.clone();
        refuse_unregistered(instance, &name, input, env, writes);
        return;
    }
    let mut record = new_record(orchestration, instance, start, env, writes);
    record.status = RuntimeStatus::Pending;
    record.scheduled_start = Some(start_at);
    let timer = TimerRecord {
        fire_at: start_at,
        instance: instance.clone(),
        execution: record.execution,
        purpose: TimerPurpose::ScheduledStart,
    };
    writes.batch.put_timer(timer.clone());
    writes
        .after
        .push(crate::runtime::writer::Dispatch::Timer(timer));
    writes.batch.put_instance(record.clone());
    orchestration.record = Loaded::Present(record);
    orchestration.engine = None;
    writes.consume(input.source);
}

/// The record of a new execution of `instance`, replacing the history of an ended one.
fn new_record(
    orchestration: &Orchestration,
    instance: &InstanceId,
    start: Start,
    env: &Env,
    writes: &mut Writes,
) -> InstanceRecord {
    if let Some(old) = orchestration.record.record() {
        // Starting an ended id again replaces its history with the new execution's.
        writes
            .batch
            .delete_history(instance.clone(), old.execution, old.history_len);
    }
    InstanceRecord {
        id: instance.clone(),
        name: start.name,
        execution: writes.new_execution(env.ids),
        status: RuntimeStatus::Running,
        input: start.input,
        output: None,
        failure: None,
        custom_status: None,
        created_at: env.now,
        last_updated_at: env.now,
        history_len: 0,
        parent: start.parent,
        generation: 1,
        scheduled_start: None,
    }
}

/// A lock grant for an execution that is gone (ended, or older) holds locks nobody will
/// release: release them.
fn release_stale_grant(instance: &InstanceId, input: &Input, env: &Env, writes: &mut Writes) {
    if let Content::Event {
        execution: Some(execution),
        event: HistoryEvent::LocksGranted { id, entities },
    } = &input.content
    {
        let holder = EntityCaller {
            instance: instance.clone(),
            execution: *execution,
            task: *id,
        };
        release_locks(&holder, entities, env, writes);
    }
}

/// Makes an input durable (if it is not yet) so it can wait: an activity result or a
/// timer firing becomes an inbox message in this commit; a client's command is answered
/// once it is stored.
pub(crate) fn park(instance: &InstanceId, input: Input, env: &Env, writes: &mut Writes) -> Input {
    if matches!(input.source, Source::Inbox(_)) {
        return input;
    }
    let key = env.ids.inbox_key(instance);
    writes
        .batch
        .put_inbox(key.clone(), input.content.to_message(instance));
    writes.consume(input.source);
    Input {
        source: Source::Inbox(key),
        ..input
    }
}

fn refuse_unregistered(
    instance: &InstanceId,
    name: &str,
    input: Input,
    env: &Env,
    writes: &mut Writes,
) {
    let failure = Failure::new(
        FailureKind::NotRegistered,
        format!(
            "cannot start instance `{instance}`: orchestrator `{name}` is not registered with this runtime; add `.register({name})` to the runtime builder"
        ),
    );
    refuse_with(instance, input, Rejection::CannotRun(failure), env, writes);
}

/// Answers a client with `rejection`; a parent's start is answered with a failed
/// sub-orchestration; anything else stored is consumed.
fn refuse_with(
    instance: &InstanceId,
    input: Input,
    rejection: Rejection,
    env: &Env,
    writes: &mut Writes,
) {
    let source = match input.source {
        // Answered once the step commits: the state the answer describes is durable.
        Source::Client(reply) => return writes.refuse(reply, rejection),
        source => source,
    };
    writes.consume(source);
    if let Content::Event {
        event:
            HistoryEvent::ExecutionStarted {
                parent: Some(parent),
                ..
            },
        ..
    } = input.content
    {
        let failure = match rejection {
            Rejection::CannotRun(failure) => failure,
            other => Failure::new(
                FailureKind::Application,
                other.into_error(instance.clone()).to_string(),
            ),
        };
        let event = HistoryEvent::SubOrchestrationFailed {
            id: parent.task,
            failure,
        };
        writes.send_event(env.ids, parent.instance, Some(parent.execution), event);
    }
}

/// Puts first what the other inputs waited for, keeping arrival order otherwise: the start
/// of an execution that already exists (created by `continue_as_new` or a scheduled
/// start), and the resume of a suspended instance.
fn order(inputs: &mut [Input], lifecycle: Lifecycle) {
    inputs.sort_by_key(|input| match &input.content {
        Content::Event {
            execution: Some(_),
            event: HistoryEvent::ExecutionStarted { .. },
        }
        | Content::ScheduledStartDue { .. } => 0,
        Content::Event {
            event: HistoryEvent::ExecutionResumed { .. },
            ..
        } if lifecycle == Lifecycle::Suspended => 1,
        _ => 2,
    });
}
