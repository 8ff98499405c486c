//! Orchestration shards: the threads that run orchestrator turns.
//!
//! Every instance belongs to one shard (by a hash of its id), so one thread alone runs its
//! turns, in order, without locks. A shard keeps each running instance *hot*: its engine,
//! with the orchestrator's live future, stays in memory between turns and is fed new
//! events, so nothing is replayed until a restart or an eviction. Orchestrator futures are
//! polled here, outside any tokio runtime, so code that reaches for tokio (a spawn, a
//! sleep) fails loudly instead of silently breaking replay.
//!
//! A round of the loop takes every message waiting, runs one turn per instance that got
//! input, and sends all the turns' writes to the writer as one commit request. Actions are
//! performed by the writer after the commit; the shard moves on to the next round without
//! waiting for it (the writer keeps commits in order).

use super::Shared;
use super::metrics::Metrics;
use super::writer::{CommitRequest, Dispatch, ReplySender, WriterMsg};
use crate::client;
use crate::core::{Action, Engine, Outcome, Outstanding, Turn, panic_message};
use durable_store::{
    ActivityKey, ActivityWorkItem, ExecutionId, Failure, FailureKind, HistoryEvent, InboxKey,
    InboxMessage, InstanceId, InstanceRecord, Json, ParentRef, RuntimeStatus, TimerKey,
    TimerRecord, Timestamp, WriteBatch,
};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

/// How many messages one round takes at most, so a flood of messages cannot starve the
/// turns (and their commits) of the instances that already have input.
const MAX_MESSAGES_PER_ROUND: usize = 10_000;

/// Messages to a shard.
pub(crate) enum ShardMsg {
    /// A committed inbox message.
    Inbox {
        key: InboxKey,
        message: InboxMessage,
    },
    /// A client request, answered after its commit.
    Request {
        request: Request,
        reply: ReplySender,
    },
    /// An activity returned (not yet committed).
    ActivityDone {
        key: ActivityKey,
        outcome: Result<Json, Failure>,
    },
    /// A timer came due (not yet committed).
    TimerFired { key: TimerKey },
    /// The commits of these instances are durable.
    Committed { instances: Vec<InstanceId> },
    /// Finish the round and exit.
    Stop,
}

/// Client requests that go through the instance's shard.
pub(crate) enum Request {
    Start {
        instance: InstanceId,
        name: String,
        input: Json,
    },
    Terminate {
        instance: InstanceId,
        reason: String,
    },
    Purge {
        instance: InstanceId,
    },
}

/// One input waiting for an instance's next turn.
struct Input {
    event: HistoryEvent,
    /// The execution it is for; `None` for whichever is current.
    execution: Option<ExecutionId>,
    source: Source,
}

/// Where an input came from: what consuming it deletes or answers.
enum Source {
    Inbox(InboxKey),
    Activity(ActivityKey),
    Timer(TimerKey),
    Client(ReplySender),
}

/// What a shard knows of one instance.
#[derive(Default)]
struct Slot {
    /// `None` until loaded, `Some(None)` for an instance that does not exist.
    record: Option<Option<InstanceRecord>>,
    engine: Option<Engine>,
    inputs: Vec<Input>,
    /// Whether the instance is in the shard's ready list.
    queued: bool,
    /// Commits sent to the writer and not yet durable.
    inflight: u32,
    /// The round of the last turn, for eviction.
    touched: u64,
}

impl Slot {
    /// Whether nothing about this instance needs memory: ended or unknown, nothing pending.
    fn is_idle_and_done(&self) -> bool {
        self.inflight == 0 && self.inputs.is_empty() && self.running_record().is_none()
    }

    fn running_record(&self) -> Option<&InstanceRecord> {
        self.record
            .as_ref()
            .and_then(Option::as_ref)
            .filter(|record| !record.status.is_terminal())
    }
}

/// The writes and post-commit work of one round (or of one instance's turn in it).
#[derive(Default)]
struct Round {
    batch: WriteBatch,
    after: Vec<Dispatch>,
    touched: Vec<InstanceId>,
}

impl Round {
    fn merge(&mut self, mut other: Round) {
        self.batch.append(&mut other.batch);
        self.after.append(&mut other.after);
        self.touched.append(&mut other.touched);
    }
}

/// What routing an input needs to know of the current execution.
#[derive(Clone, Copy)]
struct Running {
    execution: ExecutionId,
    /// No event yet: the execution was created by `continue_as_new` and its start message
    /// has not been processed.
    awaiting_start: bool,
}

pub(crate) struct Shard {
    index: usize,
    shared: Arc<Shared>,
    slots: HashMap<InstanceId, Slot>,
    ready: Vec<InstanceId>,
    purges: Vec<(InstanceId, ReplySender)>,
    round: u64,
}

/// The shard thread's loop.
pub(crate) fn run(index: usize, shared: Arc<Shared>, inbox: Receiver<ShardMsg>) {
    let mut shard = Shard {
        index,
        shared,
        slots: HashMap::new(),
        ready: Vec::new(),
        purges: Vec::new(),
        round: 0,
    };
    loop {
        let Ok(first) = inbox.recv() else {
            return;
        };
        let mut stop = shard.accept(first);
        for _ in 1..MAX_MESSAGES_PER_ROUND {
            match inbox.try_recv() {
                Ok(message) => stop |= shard.accept(message),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        shard.run_round();
        if stop {
            return;
        }
    }
}

impl Shard {
    /// Files a message; returns whether it asks the shard to stop.
    fn accept(&mut self, message: ShardMsg) -> bool {
        match message {
            ShardMsg::Inbox { key, message } => {
                let input = Input {
                    event: message.event,
                    execution: message.execution,
                    source: Source::Inbox(key),
                };
                self.push(message.target, input);
            }
            ShardMsg::Request { request, reply } => self.accept_request(request, reply),
            ShardMsg::ActivityDone { key, outcome } => {
                let event = match outcome {
                    Ok(output) => HistoryEvent::TaskCompleted {
                        id: key.task,
                        output,
                    },
                    Err(failure) => HistoryEvent::TaskFailed {
                        id: key.task,
                        failure,
                    },
                };
                let input = Input {
                    event,
                    execution: Some(key.execution),
                    source: Source::Activity(key.clone()),
                };
                self.push(key.instance, input);
            }
            ShardMsg::TimerFired { key } => {
                let input = Input {
                    event: HistoryEvent::TimerFired { id: key.task },
                    execution: Some(key.execution),
                    source: Source::Timer(key.clone()),
                };
                self.push(key.instance, input);
            }
            ShardMsg::Committed { instances } => {
                for instance in instances {
                    self.committed(&instance);
                }
            }
            ShardMsg::Stop => return true,
        }
        false
    }

    fn accept_request(&mut self, request: Request, reply: ReplySender) {
        match request {
            Request::Start {
                instance,
                name,
                input,
            } => {
                let event = HistoryEvent::ExecutionStarted {
                    name,
                    input,
                    parent: None,
                };
                let input = Input {
                    event,
                    execution: None,
                    source: Source::Client(reply),
                };
                self.push(instance, input);
            }
            Request::Terminate { instance, reason } => {
                let input = Input {
                    event: HistoryEvent::ExecutionTerminated { reason },
                    execution: None,
                    source: Source::Client(reply),
                };
                self.push(instance, input);
            }
            Request::Purge { instance } => self.purges.push((instance, reply)),
        }
    }

    fn push(&mut self, instance: InstanceId, input: Input) {
        let slot = self.slots.entry(instance.clone()).or_default();
        slot.inputs.push(input);
        if !slot.queued {
            slot.queued = true;
            self.ready.push(instance);
        }
    }

    fn committed(&mut self, instance: &InstanceId) {
        if let Some(slot) = self.slots.get_mut(instance) {
            slot.inflight = slot.inflight.saturating_sub(1);
            if slot.is_idle_and_done() {
                self.slots.remove(instance);
            }
        }
    }

    fn run_round(&mut self) {
        self.round += 1;
        let mut round = Round::default();
        let ready = std::mem::take(&mut self.ready);
        for instance in &ready {
            // Each instance's writes are built apart and kept only if its turn ran to the
            // end, so an internal error cannot commit half a turn.
            let mut turn = Round::default();
            let outcome = catch_unwind(AssertUnwindSafe(|| self.run_instance(instance, &mut turn)));
            match outcome {
                Ok(()) => round.merge(turn),
                Err(panic) => {
                    // A bug in the runtime, not in user code (the engine catches that): drop
                    // what this instance held in memory; its durable inputs come back at
                    // restart.
                    tracing::error!(
                        %instance,
                        panic = %panic_message(&*panic),
                        "internal error while running a turn; the instance is unloaded"
                    );
                    self.slots.remove(instance);
                }
            }
        }
        self.run_purges(&mut round);
        self.submit(round);
        for instance in ready {
            if self
                .slots
                .get(&instance)
                .is_some_and(Slot::is_idle_and_done)
            {
                self.slots.remove(&instance);
            }
        }
        self.evict();
    }

    fn submit(&mut self, mut round: Round) {
        if round.batch.is_empty() && round.after.is_empty() {
            return;
        }
        round.touched.sort();
        round.touched.dedup();
        for instance in &round.touched {
            if let Some(slot) = self.slots.get_mut(instance) {
                slot.inflight += 1;
            }
        }
        if !round.touched.is_empty() {
            round.after.push(Dispatch::Committed {
                shard: self.index,
                instances: round.touched,
            });
        }
        let request = CommitRequest {
            batch: round.batch,
            after: round.after,
        };
        if self.shared.writer.send(WriterMsg::Commit(request)).is_err() {
            tracing::error!("the writer has stopped; a round of turns was not committed");
        }
    }

    /// Runs one turn of `instance` over the inputs it has received.
    fn run_instance(&mut self, instance: &InstanceId, round: &mut Round) {
        let now = self.shared.clock.timestamp();
        if let Err(error) = self.load(instance) {
            tracing::error!(%instance, %error, "cannot read the instance record");
            self.fail_inputs(instance, &client::Error::Store(Arc::new(error)));
            return;
        }
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        slot.touched = self.round;
        slot.queued = false;
        let mut inputs = std::mem::take(&mut slot.inputs);
        // The start of an execution created by `continue_as_new` goes before anything that
        // arrived for that execution meanwhile.
        if let Some(position) = inputs
            .iter()
            .position(|input| matches!(input.event, HistoryEvent::ExecutionStarted { .. }))
            && position > 0
        {
            let start = inputs.remove(position);
            inputs.insert(0, start);
        }
        let mut live = Vec::new();
        let mut consumed = Vec::new();
        let mut deferred = Vec::new();
        for input in inputs {
            self.route(
                instance,
                input,
                now,
                &mut live,
                &mut consumed,
                &mut deferred,
                round,
            );
        }
        if let Some(slot) = self.slots.get_mut(instance) {
            // Inputs for an execution whose start has not arrived wait for it; its arrival
            // queues the instance again.
            slot.inputs = deferred;
        }
        if !live.is_empty() {
            match self.hot_engine(instance) {
                Ok(_) => self.turn(instance, now, live, round),
                Err(failure) if failure.kind == FailureKind::NotRegistered => {
                    // Not this instance's fault: leave its durable inputs in the store for a
                    // runtime that has the orchestrator registered.
                    tracing::error!(%instance, %failure, "cannot run the instance");
                    let error = client::Error::Failed {
                        instance: instance.clone(),
                        failure,
                    };
                    for source in consumed {
                        if let Source::Client(reply) = source {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                    self.slots.remove(instance);
                    return;
                }
                Err(failure) => self.fail_execution(instance, now, failure, round),
            }
        }
        for source in consumed {
            consume(instance, source, round);
        }
    }

    fn load(&mut self, instance: &InstanceId) -> Result<(), durable_store::Error> {
        let slot = self.slots.entry(instance.clone()).or_default();
        if slot.record.is_none() {
            slot.record = Some(self.shared.store.instance(instance)?);
        }
        Ok(())
    }

    /// Decides what one input does: start an execution, go into this turn, wait for the
    /// execution's start, or be dropped.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        instance: &InstanceId,
        input: Input,
        now: Timestamp,
        live: &mut Vec<HistoryEvent>,
        consumed: &mut Vec<Source>,
        deferred: &mut Vec<Input>,
        round: &mut Round,
    ) {
        let Some(slot) = self.slots.get(instance) else {
            return;
        };
        let running = slot.running_record().map(|record| Running {
            execution: record.execution,
            awaiting_start: record.history_len == 0 && slot.engine.is_none(),
        });
        let for_current = |running: Running| input.execution.is_none_or(|e| e == running.execution);
        match (&input.event, running) {
            (HistoryEvent::ExecutionStarted { .. }, Some(running))
                if running.awaiting_start && input.execution == Some(running.execution) =>
            {
                // The first message of an execution created by `continue_as_new`.
                live.push(input.event);
                consumed.push(input.source);
            }
            (HistoryEvent::ExecutionStarted { name, parent, .. }, Some(_)) => {
                let (name, parent) = (name.clone(), parent.clone());
                self.reject_start(instance, &name, input.source, parent, round);
            }
            (
                HistoryEvent::ExecutionStarted {
                    name,
                    input: start_input,
                    parent,
                },
                None,
            ) => {
                let (name, start_input, parent) =
                    (name.clone(), start_input.clone(), parent.clone());
                if self.begin_execution(
                    instance,
                    name.clone(),
                    start_input,
                    parent.clone(),
                    now,
                    round,
                ) {
                    live.push(input.event);
                    consumed.push(input.source);
                } else {
                    self.reject_start(instance, &name, input.source, parent, round);
                }
            }
            (_, Some(running))
                if for_current(running) && running.awaiting_start && live.is_empty() =>
            {
                deferred.push(input);
            }
            (_, Some(running)) if for_current(running) => {
                live.push(input.event);
                consumed.push(input.source);
            }
            (event, _) => {
                // For an ended, purged or older execution: drop it, answering a client.
                let is_terminate = matches!(event, HistoryEvent::ExecutionTerminated { .. });
                match input.source {
                    Source::Client(reply) if is_terminate => {
                        let error = match slot.record.as_ref().and_then(Option::as_ref) {
                            Some(ended) => client::Error::NotRunning {
                                instance: instance.clone(),
                                status: ended.status,
                            },
                            None => client::Error::NotFound {
                                instance: instance.clone(),
                            },
                        };
                        let _ = reply.send(Err(error));
                    }
                    source => consumed.push(source),
                }
            }
        }
    }

    /// Creates the record of a new execution; false if the orchestrator is unknown.
    fn begin_execution(
        &mut self,
        instance: &InstanceId,
        name: String,
        input: Json,
        parent: Option<ParentRef>,
        now: Timestamp,
        round: &mut Round,
    ) -> bool {
        let Some(entry) = self.shared.registry.orchestrator(&name) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(instance) else {
            return false;
        };
        let previous = slot.record.take().flatten();
        let execution = match &previous {
            Some(old) => {
                // Starting an ended id again replaces its history with the new execution's.
                round
                    .batch
                    .delete_history(instance.clone(), old.execution, old.history_len);
                old.execution.next()
            }
            None => ExecutionId::FIRST,
        };
        slot.record = Some(Some(InstanceRecord {
            id: instance.clone(),
            name,
            execution,
            status: RuntimeStatus::Running,
            input,
            output: None,
            failure: None,
            custom_status: None,
            created_at: now,
            last_updated_at: now,
            history_len: 0,
            parent,
        }));
        slot.engine = Some(Engine::new(instance.clone(), execution, entry.run));
        Metrics::add(&self.shared.metrics.instances_started, 1);
        true
    }

    fn reject_start(
        &mut self,
        instance: &InstanceId,
        name: &str,
        source: Source,
        parent: Option<ParentRef>,
        round: &mut Round,
    ) {
        let record = self
            .slots
            .get(instance)
            .and_then(|slot| slot.record.clone())
            .flatten();
        let failure = match &record {
            Some(record) if !record.status.is_terminal() => Failure::new(
                FailureKind::Application,
                format!(
                    "instance `{instance}` already exists and is {}",
                    record.status
                ),
            ),
            _ => Failure::new(
                FailureKind::NotRegistered,
                format!(
                    "cannot start instance `{instance}`: orchestrator `{name}` is not registered with this runtime"
                ),
            ),
        };
        match source {
            Source::Client(reply) => {
                let error = match record {
                    Some(record) if !record.status.is_terminal() => client::Error::AlreadyExists {
                        instance: instance.clone(),
                        status: record.status,
                    },
                    _ => client::Error::Failed {
                        instance: instance.clone(),
                        failure,
                    },
                };
                let _ = reply.send(Err(error));
            }
            other => {
                consume(instance, other, round);
                if let Some(parent) = parent {
                    let event = HistoryEvent::SubOrchestrationFailed {
                        id: parent.task,
                        failure,
                    };
                    self.send_message(parent.instance, Some(parent.execution), event, round);
                }
            }
        }
    }

    /// Runs the (hot) engine over `live` and adds the turn's writes to the round.
    fn turn(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        live: Vec<HistoryEvent>,
        round: &mut Round,
    ) {
        let Some(engine) = self
            .slots
            .get_mut(instance)
            .and_then(|slot| slot.engine.as_mut())
        else {
            return;
        };
        let turn = engine.run_turn(now, live);
        Metrics::add(&self.shared.metrics.turns, 1);
        for (event, reason) in &turn.discarded {
            tracing::debug!(%instance, event = event.kind(), reason, "input discarded");
        }
        self.apply_turn(instance, now, turn, round);
    }

    /// Fails the current execution without running its code: its history could not be
    /// replayed.
    fn fail_execution(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        failure: Failure,
        round: &mut Round,
    ) {
        tracing::warn!(%instance, %failure, "the execution fails: its history cannot be replayed");
        let turn = Turn {
            events: vec![
                HistoryEvent::OrchestratorStarted { at: now },
                HistoryEvent::ExecutionFailed {
                    failure: failure.clone(),
                },
            ],
            outcome: Some(Outcome::Failed(failure)),
            ..Turn::default()
        };
        self.apply_turn(instance, now, turn, round);
    }

    /// The instance's engine, replaying its history first if it is not in memory.
    fn hot_engine(&mut self, instance: &InstanceId) -> Result<&mut Engine, Failure> {
        let shared = Arc::clone(&self.shared);
        let Some(slot) = self.slots.get_mut(instance) else {
            return Err(internal("the instance is not loaded"));
        };
        if slot.engine.is_none() {
            let Some(record) = slot.running_record() else {
                return Err(internal("the instance is not running"));
            };
            let Some(entry) = shared.registry.orchestrator(&record.name) else {
                return Err(Failure::new(
                    FailureKind::NotRegistered,
                    format!(
                        "orchestrator `{}` is not registered with this runtime; register it to resume the instance",
                        record.name
                    ),
                ));
            };
            let history = shared
                .store
                .history(instance, record.execution)
                .map_err(|error| internal(&format!("cannot read the history: {error}")))?;
            let mut engine = Engine::new(instance.clone(), record.execution, entry.run);
            Metrics::add(&shared.metrics.replays, 1);
            Metrics::add(
                &shared.metrics.history_events_replayed,
                history.len() as u64,
            );
            engine.replay(&history)?;
            slot.engine = Some(engine);
        }
        slot.engine
            .as_mut()
            .ok_or_else(|| internal("the engine vanished"))
    }

    fn apply_turn(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        mut turn: Turn,
        round: &mut Round,
    ) {
        explain_tokio_panic(&mut turn);
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        let Some(Some(record)) = slot.record.as_mut() else {
            return;
        };
        for event in turn.events {
            round.batch.append_history(
                instance.clone(),
                record.execution,
                record.history_len,
                event,
            );
            record.history_len += 1;
        }
        record.last_updated_at = now;
        if let Some(engine) = &slot.engine {
            record.custom_status = engine.custom_status().or(record.custom_status.take());
        }
        let execution = record.execution;
        let ended = turn.outcome.is_some();
        let mut outstanding = match (&turn.outcome, &slot.engine) {
            (Some(_), Some(engine)) => engine.outstanding(),
            _ => Vec::new(),
        };
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
                cancel(instance, execution, task, round);
            }
            let continued = matches!(outcome, Outcome::ContinuedAsNew(_));
            self.end_execution(instance, outcome, round);
            if continued {
                self.carry_over(instance, turn.unprocessed, round);
            }
        }
        if let Some(Some(record)) = self
            .slots
            .get(instance)
            .and_then(|slot| slot.record.as_ref())
        {
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
        match action {
            Action::ScheduleActivity { id, name, input } => {
                let item = ActivityWorkItem {
                    instance: instance.clone(),
                    execution,
                    task: id,
                    name,
                    input,
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

    /// Records the end of the current execution and tells its parent.
    fn end_execution(&mut self, instance: &InstanceId, outcome: Outcome, round: &mut Round) {
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        slot.engine = None;
        let Some(Some(record)) = slot.record.as_mut() else {
            return;
        };
        Metrics::add(&self.shared.metrics.instances_ended, 1);
        let result = match outcome {
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
                record.execution = record.execution.next();
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

    /// Hands external events that the ended execution did not reach to the next one (what
    /// `continue_as_new` callers expect: no event is lost between executions).
    fn carry_over(
        &mut self,
        instance: &InstanceId,
        unprocessed: Vec<HistoryEvent>,
        round: &mut Round,
    ) {
        let Some(execution) = self
            .slots
            .get(instance)
            .and_then(Slot::running_record)
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

    /// Stores a message for `target` in this round's commit and delivers it after.
    fn send_message(
        &mut self,
        target: InstanceId,
        execution: Option<ExecutionId>,
        event: HistoryEvent,
        round: &mut Round,
    ) {
        let key = self.shared.next_inbox_key(&target);
        let message = InboxMessage {
            target,
            execution,
            event,
        };
        round.batch.put_inbox(key.clone(), message.clone());
        round.after.push(Dispatch::Deliver(key, message));
    }

    fn fail_inputs(&mut self, instance: &InstanceId, error: &client::Error) {
        if let Some(slot) = self.slots.remove(instance) {
            for input in slot.inputs {
                if let Source::Client(reply) = input.source {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn run_purges(&mut self, round: &mut Round) {
        let purges = std::mem::take(&mut self.purges);
        for (instance, reply) in purges {
            if let Err(error) = self.load(&instance) {
                let _ = reply.send(Err(client::Error::Store(Arc::new(error))));
                continue;
            }
            let Some(slot) = self.slots.get(&instance) else {
                continue;
            };
            if slot.inflight > 0 || !slot.inputs.is_empty() {
                self.purges.push((instance, reply)); // after its pending writes
                continue;
            }
            match slot.record.clone().flatten() {
                None => {
                    self.slots.remove(&instance);
                    let _ = reply.send(Err(client::Error::NotFound { instance }));
                }
                Some(record) if !record.status.is_terminal() => {
                    let _ = reply.send(Err(client::Error::NotEnded {
                        instance: instance.clone(),
                        status: record.status,
                    }));
                }
                Some(record) => {
                    round.batch.delete_history(
                        instance.clone(),
                        record.execution,
                        record.history_len,
                    );
                    round.batch.delete_instance(instance.clone());
                    match self.shared.store.inbox(&instance) {
                        Ok(leftovers) => leftovers
                            .into_iter()
                            .for_each(|(key, _)| round.batch.delete_inbox(key)),
                        Err(error) => {
                            tracing::warn!(%instance, %error, "cannot read the inbox to purge")
                        }
                    }
                    self.slots.remove(&instance);
                    round.after.push(Dispatch::Reply(reply));
                }
            }
        }
    }

    /// Drops the least recently used idle instances once more are hot than configured.
    fn evict(&mut self) {
        let limit = self.shared.config.max_cached_instances;
        if self.slots.len() <= limit {
            return;
        }
        let mut idle: Vec<(u64, InstanceId)> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.inflight == 0 && slot.inputs.is_empty())
            .map(|(id, slot)| (slot.touched, id.clone()))
            .collect();
        idle.sort();
        // Evict down to 90% so evictions happen in batches, not on every round.
        let excess = self.slots.len() - limit * 9 / 10;
        for (_, instance) in idle.into_iter().take(excess) {
            self.slots.remove(&instance);
            Metrics::add(&self.shared.metrics.cache_evictions, 1);
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

/// Deletes (or answers) the source of a consumed input.
fn consume(instance: &InstanceId, source: Source, round: &mut Round) {
    match source {
        Source::Inbox(key) => round.batch.delete_inbox(key),
        Source::Activity(key) => round.batch.delete_activity(key),
        Source::Timer(key) => round.batch.delete_timer(key),
        Source::Client(reply) => round.after.push(Dispatch::Reply(reply)),
    }
    round.touched.push(instance.clone());
}

/// Cancels work an ended execution left behind: its activities will not run again after
/// a restart and its timers will not fire.
fn cancel(instance: &InstanceId, execution: ExecutionId, task: Outstanding, round: &mut Round) {
    match task {
        Outstanding::Activity(task) => round.batch.delete_activity(ActivityKey {
            instance: instance.clone(),
            execution,
            task,
        }),
        Outstanding::Timer(task, fire_at) => round.batch.delete_timer(TimerKey {
            fire_at,
            instance: instance.clone(),
            execution,
            task,
        }),
        // A child runs on; its result will find the parent ended and be dropped.
        Outstanding::SubOrchestration(_) => {}
    }
}

fn internal(message: &str) -> Failure {
    Failure::new(FailureKind::Internal, message.to_owned())
}
