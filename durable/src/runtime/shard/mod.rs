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
//!
//! `inputs.rs` decides what each input does (with the table of `routing.rs`);
//! `turns.rs` runs the engine and turns its output into writes.

mod entities;
mod inputs;
mod turns;

use super::Shared;
use super::metrics::Metrics;
use super::routing::Mode;
use super::writer::{CommitRequest, Dispatch, ReplySender, WriterMsg};
use crate::client;
use crate::core::{Engine, panic_message};
use durable_store::{
    ActivityKey, EntityId, ExecutionId, Failure, FailureKind, HistoryEvent, InboxKey, InboxMessage,
    InstanceId, InstanceRecord, Json, TimerKey, Timestamp, WriteBatch,
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
    /// Something stored for this orchestration is damaged: fail its execution (from what
    /// is stored) with this reason.
    Damaged {
        instance: InstanceId,
        failure: Failure,
    },
    /// Finish the round and exit.
    Stop,
}

/// Client requests that go through the instance's shard.
pub(crate) enum Request {
    Start {
        instance: InstanceId,
        name: String,
        input: Json,
        /// Not before this time.
        start_at: Option<Timestamp>,
    },
    RaiseEvent {
        instance: InstanceId,
        name: String,
        input: Json,
    },
    Terminate {
        instance: InstanceId,
        reason: String,
    },
    Suspend {
        instance: InstanceId,
        reason: String,
    },
    Resume {
        instance: InstanceId,
        reason: String,
    },
    Purge {
        instance: InstanceId,
    },
    SignalEntity {
        entity: EntityId,
        operation: String,
        input: Json,
    },
    DeleteEntity {
        entity: EntityId,
    },
}

/// One input waiting for an instance's next turn.
struct Input {
    event: HistoryEvent,
    /// The execution it is for; `None` for whichever is current.
    execution: Option<ExecutionId>,
    source: Source,
    /// For a start: not before this time.
    start_at: Option<Timestamp>,
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
    /// Inputs of the next turn, and inputs kept (stored) until the instance can take them.
    inputs: Vec<Input>,
    /// Whether the instance is in the shard's ready list.
    queued: bool,
    /// Commits sent to the writer and not yet durable.
    inflight: u32,
    /// The round of the last turn, for eviction.
    touched: u64,
    /// What memory holds may be ahead of the store and wrong (an internal error broke a
    /// turn): reload once the commits in flight are durable.
    stale: bool,
    /// Internal errors while running this instance's turns, in this process.
    internal_errors: u32,
    /// Set after too many internal errors: the next round fails the execution (from what
    /// is stored) instead of running its code again.
    poisoned: Option<Failure>,
    /// For an entity: its record and hot state.
    entity: Option<entities::Hot>,
}

impl Slot {
    fn record(&self) -> Option<&InstanceRecord> {
        self.record.as_ref().and_then(Option::as_ref)
    }

    fn record_mut(&mut self) -> Option<&mut InstanceRecord> {
        self.record.as_mut().and_then(Option::as_mut)
    }

    fn mode(&self) -> Mode {
        Mode::of(self.record(), self.engine.is_some())
    }

    /// Whether nothing about this instance needs memory: ended or unknown (for an entity:
    /// without state or lock), nothing pending.
    fn is_idle_and_done(&self) -> bool {
        if self.inflight > 0 || !self.inputs.is_empty() {
            return false;
        }
        match &self.entity {
            Some(hot) => hot.is_empty(),
            None => matches!(self.mode(), Mode::Absent | Mode::Ended(_)),
        }
    }
}

/// The writes and post-commit work of one round (or of one instance's turn in it).
#[derive(Default)]
struct Round {
    batch: WriteBatch,
    after: Vec<Dispatch>,
    touched: Vec<InstanceId>,
    /// The highest execution id handed out in the round.
    execution_floor: Option<ExecutionId>,
}

impl Round {
    fn merge(&mut self, mut other: Round) {
        self.batch.append(&mut other.batch);
        self.after.append(&mut other.after);
        self.touched.append(&mut other.touched);
        self.execution_floor = self.execution_floor.max(other.execution_floor);
    }
}

impl Shard {
    /// A new execution id, recorded in the round so the stored floor covers it.
    fn new_execution(&self, round: &mut Round) -> ExecutionId {
        let execution = self.shared.new_execution();
        round.execution_floor = round.execution_floor.max(Some(execution));
        execution
    }
}

pub(crate) struct Shard {
    index: usize,
    shared: Arc<Shared>,
    slots: HashMap<InstanceId, Slot>,
    ready: Vec<InstanceId>,
    purges: Vec<(InstanceId, ReplySender)>,
    /// Instances whose turn could not run (a store read failed); tried again shortly.
    retry: Vec<InstanceId>,
    round: u64,
}

/// How long a shard waits before retrying instances whose store reads failed.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// The shard thread's loop.
pub(crate) fn run(index: usize, shared: Arc<Shared>, inbox: Receiver<ShardMsg>) {
    let mut shard = Shard {
        index,
        shared,
        slots: HashMap::new(),
        ready: Vec::new(),
        purges: Vec::new(),
        retry: Vec::new(),
        round: 0,
    };
    loop {
        let first = if shard.retry.is_empty() {
            match inbox.recv() {
                Ok(message) => Some(message),
                Err(_) => return,
            }
        } else {
            match inbox.recv_timeout(RETRY_DELAY) {
                Ok(message) => Some(message),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        for instance in std::mem::take(&mut shard.retry) {
            shard.queue(instance);
        }
        let mut stop = first.is_some_and(|message| shard.accept(message));
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
                    start_at: None,
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
                    start_at: None,
                };
                self.push(key.instance, input);
            }
            ShardMsg::TimerFired { key } => {
                let input = Input {
                    event: HistoryEvent::TimerFired { id: key.task },
                    execution: Some(key.execution),
                    source: Source::Timer(key.clone()),
                    start_at: None,
                };
                self.push(key.instance, input);
            }
            ShardMsg::Committed { instances } => {
                for instance in instances {
                    self.committed(&instance);
                }
            }
            ShardMsg::Damaged { instance, failure } => {
                if !instance.is_entity() {
                    self.slots.entry(instance.clone()).or_default().poisoned = Some(failure);
                    self.queue(instance);
                }
            }
            ShardMsg::Stop => return true,
        }
        false
    }

    fn accept_request(&mut self, request: Request, reply: ReplySender) {
        let (instance, event, start_at) = match request {
            Request::Start {
                instance,
                name,
                input,
                start_at,
            } => {
                let event = HistoryEvent::ExecutionStarted {
                    name,
                    input,
                    parent: None,
                };
                (instance, event, start_at)
            }
            Request::RaiseEvent {
                instance,
                name,
                input,
            } => (instance, HistoryEvent::EventRaised { name, input }, None),
            Request::Terminate { instance, reason } => {
                (instance, HistoryEvent::ExecutionTerminated { reason }, None)
            }
            Request::Suspend { instance, reason } => {
                (instance, HistoryEvent::ExecutionSuspended { reason }, None)
            }
            Request::Resume { instance, reason } => {
                (instance, HistoryEvent::ExecutionResumed { reason }, None)
            }
            Request::Purge { instance } => {
                self.purges.push((instance, reply));
                return;
            }
            Request::SignalEntity {
                entity,
                operation,
                input,
            } => {
                let event = HistoryEvent::EntityOperation {
                    operation,
                    input,
                    caller: None,
                    reply: false,
                };
                (entity.instance_id(), event, None)
            }
            Request::DeleteEntity { entity } => {
                // An operation like the others, so that it waits its turn (and for a lock).
                let event = HistoryEvent::EntityOperation {
                    operation: entities::DELETE_OPERATION.to_owned(),
                    input: Json::null(),
                    caller: None,
                    reply: false,
                };
                (entity.instance_id(), event, None)
            }
        };
        let input = Input {
            event,
            execution: None,
            source: Source::Client(reply),
            start_at,
        };
        self.push(instance, input);
    }

    fn push(&mut self, instance: InstanceId, input: Input) {
        let slot = self.slots.entry(instance.clone()).or_default();
        slot.inputs.push(input);
        self.queue(instance);
    }

    fn queue(&mut self, instance: InstanceId) {
        let slot = self.slots.entry(instance.clone()).or_default();
        if !slot.queued {
            slot.queued = true;
            self.ready.push(instance);
        }
    }

    fn committed(&mut self, instance: &InstanceId) {
        if let Some(slot) = self.slots.get_mut(instance) {
            slot.inflight = slot.inflight.saturating_sub(1);
            if slot.stale && slot.inflight == 0 && !slot.inputs.is_empty() {
                self.queue(instance.clone());
            } else if slot.is_idle_and_done() {
                self.slots.remove(instance);
            } else if self.has_runnable_spill(instance) {
                // Spilled messages may have become readable.
                self.queue(instance.clone());
            }
        }
    }

    fn run_round(&mut self) {
        self.round += 1;
        if self.shared.is_poisoned() {
            self.refuse_everything();
            return;
        }
        let mut round = Round::default();
        let ready = std::mem::take(&mut self.ready);
        for instance in &ready {
            // Each instance's writes are built apart and kept only if its turn ran to the
            // end, so an internal error cannot commit half a turn.
            let mut turn = Round::default();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                if instance.is_entity() {
                    self.run_entity(instance, &mut turn);
                } else {
                    self.run_instance(instance, &mut turn);
                }
            }));
            match outcome {
                Ok(()) => round.merge(turn),
                Err(panic) => {
                    // A bug in the runtime, not in user code (the engine catches that): drop
                    // what this instance held in memory and reload it from the store. An
                    // orchestration that keeps failing so is failed instead of retried
                    // forever; its durable inputs come back at restart.
                    let message = panic_message(&*panic);
                    tracing::error!(
                        %instance,
                        panic = %message,
                        "internal error while running a turn; the instance is reloaded"
                    );
                    let attempts = self.shared.config.max_turn_attempts;
                    if let Some(slot) = self.slots.get_mut(instance) {
                        slot.stale = true;
                        slot.engine = None;
                        slot.entity = None;
                        if !instance.is_entity() {
                            slot.internal_errors += 1;
                            if slot.internal_errors > attempts {
                                tracing::error!(
                                    %instance,
                                    "the instance cannot even be failed; it stays as stored until the next start"
                                );
                                continue;
                            }
                            if slot.internal_errors == attempts {
                                slot.poisoned = Some(Failure::new(
                                    FailureKind::Internal,
                                    format!(
                                        "the runtime failed {attempts} times running a turn of this instance (last: {message}); it is failed instead of retried forever. This is a bug in the runtime: please report it"
                                    ),
                                ));
                            }
                            self.retry.push(instance.clone());
                        }
                    }
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
        if round.batch.is_empty() && round.after.is_empty() && round.execution_floor.is_none() {
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
            execution_floor: round.execution_floor,
        };
        if self.shared.writer.send(WriterMsg::Commit(request)).is_err() {
            tracing::error!("the writer has stopped; a round of turns was not committed");
        }
    }

    fn load(&mut self, instance: &InstanceId) -> Result<(), durable_store::Error> {
        let slot = self.slots.entry(instance.clone()).or_default();
        if slot.record.is_none() {
            slot.record = Some(self.shared.store.instance(instance)?);
        }
        Ok(())
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

    /// After a failed commit nothing more is written: every waiting client hears why.
    fn refuse_everything(&mut self) {
        for instance in std::mem::take(&mut self.ready) {
            if let Some(slot) = self.slots.get_mut(&instance) {
                slot.queued = false;
                for input in std::mem::take(&mut slot.inputs) {
                    if let Source::Client(reply) = input.source {
                        let _ = reply.send(Err(client::Error::Poisoned));
                    }
                }
            }
        }
        for (_, reply) in std::mem::take(&mut self.purges) {
            let _ = reply.send(Err(client::Error::Poisoned));
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
            // After its pending writes, including this round's: the next round comes with
            // the `Committed` message.
            if slot.inflight > 0 || !slot.inputs.is_empty() || round.touched.contains(&instance) {
                self.purges.push((instance, reply));
                continue;
            }
            match slot.record().cloned() {
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
                        Ok(leftovers) => {
                            for (key, message) in leftovers {
                                // A lock grant nobody will take: its locks are released.
                                if let (
                                    HistoryEvent::LocksGranted { id, entities },
                                    Some(execution),
                                ) = (&message.event, message.execution)
                                {
                                    self.release_locks(&instance, execution, *id, entities, round);
                                }
                                round.batch.delete_inbox(key);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%instance, %error, "cannot read the inbox to purge");
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
            .filter(|(_, slot)| {
                // An entity with spilled messages keeps the list of them.
                slot.inflight == 0
                    && slot.inputs.is_empty()
                    && slot
                        .entity
                        .as_ref()
                        .is_none_or(|hot| hot.has_nothing_spilled())
            })
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
