//! Orchestration shards: the threads that run orchestrator turns and entity rounds.
//!
//! Every instance belongs to one shard (by a hash of its id), so one thread alone runs its
//! turns, in order, without locks. A shard keeps each running instance *hot*: its engine,
//! with the orchestrator's live future, stays in memory between turns and is fed new
//! events, so nothing is replayed until a restart or an eviction. Orchestrator futures are
//! polled here, outside any tokio runtime, so code that reaches for tokio (a spawn, a
//! sleep) fails loudly instead of silently breaking replay.
//!
//! The shard is data plus functions. It keeps a [`Slot`] per instance, the ready list and
//! the loop; what happens to one instance is a *step* (`orchestration::step`,
//! `entity::step`, `purge::purge`) that takes the slot and what it may read ([`Env`]) and
//! returns its [`Writes`]. A round of the loop takes every message waiting, steps each
//! instance that got input, and sends all the steps' writes to the writer as one commit
//! request. Actions are performed by the writer after the commit; the shard moves on to
//! the next round without waiting for it (the writer keeps commits in order).

mod entity;
mod input;
mod mailbox;
mod orchestration;
mod purge;
mod routing;
mod slot;
mod slow;
mod spill;
mod turn;
mod writes;

#[cfg(test)]
mod tests;

pub(crate) use mailbox::{Envelope, Mailbox};

use super::Shared;
use super::handle::{Rejection, ReplySender};
use super::metrics::Metrics;
use super::writer::{CommitRequest, Dispatch};
use crate::client::Command;
use durable_core::panic_message;
use durable_types::{
    ActivityKey, EntityMessage, Failure, FailureKind, HistoryEvent, InboxKey, InboxMessage,
    InstanceId, Json, TimerKey, TimerPurpose,
};
use input::{Content, Input, Source, StartTerms};
use purge::Purge;
use slot::{Kind, Slot};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use writes::{Env, Next, Step, Writes};

/// How many messages one round takes at most, so a flood of messages cannot starve the
/// turns (and their commits) of the instances that already have input.
const MAX_MESSAGES_PER_ROUND: usize = 10_000;

/// How long a shard waits before retrying instances whose store reads failed.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Messages to a shard.
pub(crate) enum ShardMsg {
    /// A committed inbox message.
    Inbox {
        key: InboxKey,
        message: InboxMessage,
    },
    /// An inbox message read from the store at start-up, or by a worker taking its
    /// partition over (then before the partition counts as owned, so that no live delivery
    /// of the same message can come too).
    Stored {
        key: InboxKey,
        message: InboxMessage,
    },
    /// A client's command, answered after its commit.
    Command {
        command: Command,
        reply: ReplySender,
    },
    /// An activity returned (not yet committed).
    ActivityDone {
        key: ActivityKey,
        outcome: Result<Json, Failure>,
        /// The runtime's generation the run belongs to.
        generation: u64,
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
    /// Drop everything held in memory: commits made from it were discarded (a fenced
    /// commit, see `runtime/ownership.rs`); what is stored comes again.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Reset { generation: u64 },
    /// Drop the instances of these partitions (this worker no longer runs them); say so
    /// on `done`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Forget {
        partitions: durable_store::PartitionSet,
        done: std::sync::mpsc::Sender<()>,
    },
    /// Finish the round and exit.
    Stop,
}

pub(crate) struct Shard {
    index: usize,
    shared: Arc<Shared>,
    slots: HashMap<InstanceId, Slot>,
    ready: Vec<InstanceId>,
    purges: Vec<(InstanceId, ReplySender)>,
    /// Instances whose step could not run (a store read failed); tried again shortly.
    retry: Vec<InstanceId>,
    round: u64,
    /// The runtime's generation this shard's state belongs to.
    generation: u64,
}

/// The shard thread's loop.
pub(crate) fn run(index: usize, shared: Arc<Shared>, inbox: Receiver<Envelope>) {
    let mut shard = Shard {
        index,
        shared,
        slots: HashMap::new(),
        ready: Vec::new(),
        purges: Vec::new(),
        retry: Vec::new(),
        round: 0,
        generation: 0,
    };
    shard.generation = shard.shared.ownership.generation();
    loop {
        let first = if shard.retry.is_empty() {
            match inbox.recv() {
                Ok(message) => Some(message),
                Err(_) => return,
            }
        } else {
            match inbox.recv_timeout(RETRY_DELAY) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        for instance in std::mem::take(&mut shard.retry) {
            shard.queue(instance);
        }
        let mut stop = first.is_some_and(|envelope| shard.accept(envelope.message));
        for _ in 1..MAX_MESSAGES_PER_ROUND {
            match inbox.try_recv() {
                Ok(envelope) => stop |= shard.accept(envelope.message),
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
        if !self.runs(&message) {
            // Another worker runs it now; what the message carries is stored for it.
            if let ShardMsg::Command { reply, .. } = message {
                reply.send(Err(not_owned()));
            }
            return false;
        }
        match message {
            ShardMsg::Inbox { key, message } | ShardMsg::Stored { key, message } => {
                let input = Input {
                    content: Content::of(message.body),
                    source: Source::Inbox(key),
                    terms: StartTerms::default(),
                };
                self.push(message.target, input);
            }
            ShardMsg::Command { command, reply } => self.accept_command(command, reply),
            // A run of before a reset whose work item was taken up again: the run
            // started since (or adopted) is the one whose result counts.
            ShardMsg::ActivityDone { generation, .. } if generation != self.generation => {}
            ShardMsg::ActivityDone { key, outcome, .. } => self.accept_result(key, outcome),
            ShardMsg::TimerFired { key } => {
                let content = match key.purpose {
                    TimerPurpose::Task(id) => Content::Event {
                        execution: Some(key.execution),
                        event: HistoryEvent::TimerFired { id },
                    },
                    TimerPurpose::ScheduledStart => Content::ScheduledStartDue {
                        execution: key.execution,
                    },
                };
                let instance = key.instance.clone();
                self.push(instance, input(content, Source::Timer(key)));
            }
            ShardMsg::Committed { instances } => {
                for instance in instances {
                    self.committed(&instance);
                }
            }
            ShardMsg::Damaged { instance, failure } => self.doom(instance, failure),
            ShardMsg::Reset { generation } => {
                self.generation = generation;
                self.drop_instances(|_| true);
            }
            ShardMsg::Forget { partitions, done } => {
                self.drop_instances(|instance| {
                    partitions.contains(durable_store::partition_of(instance.as_str()))
                });
                let _ = done.send(());
            }
            ShardMsg::Stop => return true,
        }
        false
    }

    /// An activity's result, for its orchestration's next turn.
    fn accept_result(&mut self, key: ActivityKey, outcome: Result<Json, Failure>) {
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
        let content = Content::Event {
            execution: Some(key.execution),
            event,
        };
        let instance = key.instance.clone();
        self.push(instance, input(content, Source::Activity(key)));
    }

    /// Whether this runtime runs what `message` is for (another worker may, now).
    fn runs(&self, message: &ShardMsg) -> bool {
        match message {
            #[cfg(feature = "postgres")]
            ShardMsg::Command {
                reply: ReplySender::Remote(request),
                ..
            } if self.shared.ownership.tenure(request.partition) != request.tenure => false,
            ShardMsg::Command { command, .. } => self.shared.ownership.owns(&command.target()),
            message => message
                .instance()
                .is_none_or(|instance| self.shared.ownership.owns(instance)),
        }
    }

    fn accept_command(&mut self, command: Command, reply: ReplySender) {
        let instance = command.target();
        let mut terms = StartTerms::default();
        let content = match command {
            Command::Start {
                name,
                input,
                start_at,
                reuse,
                ..
            } => {
                terms = StartTerms {
                    at: start_at,
                    reuse,
                };
                let parent = None;
                orchestration_event(HistoryEvent::ExecutionStarted {
                    name,
                    input,
                    parent,
                    generation: 1,
                })
            }
            Command::RaiseEvent { name, input, .. } => {
                orchestration_event(HistoryEvent::EventRaised { name, input })
            }
            Command::Terminate { reason, .. } => {
                orchestration_event(HistoryEvent::ExecutionTerminated { reason })
            }
            Command::Suspend { reason, .. } => {
                orchestration_event(HistoryEvent::ExecutionSuspended { reason })
            }
            Command::Resume { reason, .. } => {
                orchestration_event(HistoryEvent::ExecutionResumed { reason })
            }
            Command::Purge { .. } => return self.purges.push((instance, reply)),
            Command::SignalEntity {
                operation, input, ..
            } => entity_operation(operation, input),
            // An operation like the others, so that it waits its turn (and for a lock).
            Command::DeleteEntity { .. } => {
                entity_operation(entity::DELETE_OPERATION.to_owned(), Json::null())
            }
        };
        let source = Source::Client(reply);
        let input = Input {
            content,
            source,
            terms,
        };
        self.push(instance, input);
    }

    /// Something stored for an orchestration is damaged: its next step fails it.
    fn doom(&mut self, instance: InstanceId, failure: Failure) {
        let slot = self
            .slots
            .entry(instance.clone())
            .or_insert_with(|| Slot::new(&instance));
        if let Kind::Orchestration(orchestration) = &mut slot.kind {
            orchestration.fail_with = Some(failure);
            self.queue(instance);
        }
    }

    fn push(&mut self, instance: InstanceId, input: Input) {
        self.slot(&instance).inputs.push(input);
        self.queue(instance);
    }

    fn slot(&mut self, instance: &InstanceId) -> &mut Slot {
        self.slots
            .entry(instance.clone())
            .or_insert_with(|| Slot::new(instance))
    }

    fn queue(&mut self, instance: InstanceId) {
        let slot = self.slot(&instance);
        if !slot.queued {
            slot.queued = true;
            self.ready.push(instance);
        }
    }

    fn committed(&mut self, instance: &InstanceId) {
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        slot.inflight = slot.inflight.saturating_sub(1);
        let runnable_spill = match &slot.kind {
            // Spilled messages may have become readable.
            Kind::Entity(entity) => entity
                .hot
                .as_ref()
                .is_some_and(|hot| !hot.spilled.is_empty() && hot.lock().is_none()),
            Kind::Orchestration(_) => false,
        };
        if slot.stale && slot.inflight == 0 && !slot.inputs.is_empty() {
            self.queue(instance.clone());
        } else if slot.is_idle_and_done() {
            self.slots.remove(instance);
        } else if runnable_spill {
            self.queue(instance.clone());
        }
    }

    fn run_round(&mut self) {
        self.round += 1;
        if self.shared.is_poisoned() {
            self.refuse_everything();
            return;
        }
        let shared = Arc::clone(&self.shared);
        let env = Env {
            now: shared.clock.turn_timestamp(),
            registry: &shared.registry,
            config: &shared.config,
            store: &*shared.store,
            ids: &shared.ids,
            metrics: &shared.metrics,
        };
        let mut round = Writes::default();
        let mut touched = Vec::new();
        let ready = std::mem::take(&mut self.ready);
        self.prefetch_records(&ready, &env);
        for instance in &ready {
            if let Some(writes) = self.step(instance, &env) {
                if writes.touches {
                    touched.push(instance.clone());
                }
                round.merge(writes);
            }
        }
        self.run_purges(&env, &mut round, &mut touched);
        self.submit(round, touched);
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

    /// Reads, all at once, the records of the orchestrations about to step that memory does
    /// not hold: a burst of starts on a store across a network is then one round trip, not
    /// one per instance. What this does not read (a failed read, an undecodable record)
    /// each step reads, and reports, itself.
    fn prefetch_records(&mut self, ready: &[InstanceId], env: &Env) {
        let wanted: Vec<InstanceId> = ready
            .iter()
            .filter(|instance| self.slots.get(*instance).is_some_and(Slot::lacks_record))
            .cloned()
            .collect();
        if wanted.len() < 2 {
            return;
        }
        let Ok(records) = env.store.instances(&wanted) else {
            return;
        };
        for (instance, record) in wanted.iter().zip(records) {
            if let (Ok(record), Some(slot)) = (record, self.slots.get_mut(instance)) {
                slot.set_record(record);
            }
        }
    }

    /// Runs one instance's step; its writes are kept only if the step ran to the end, so
    /// an internal error cannot commit half a turn.
    fn step(&mut self, instance: &InstanceId, env: &Env) -> Option<Writes> {
        let round = self.round;
        let slot = self.slot(instance);
        slot.touched = round;
        slot.queued = false;
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            if instance.is_entity() {
                entity::step(slot, instance, env)
            } else {
                orchestration::step(slot, instance, env)
            }
        }));
        // An orchestrator's panic, caught by the engine, is logged here, with its instance.
        crate::panics::log_caught(Some(instance.as_str()), None);
        match stepped {
            Ok(Step { writes, next }) => {
                match next {
                    Next::Wait => {}
                    Next::Again => self.queue(instance.clone()),
                    Next::Retry => self.retry.push(instance.clone()),
                }
                Some(writes)
            }
            Err(panic) => {
                self.internal_error(instance, &panic_message(&*panic));
                None
            }
        }
    }

    /// A bug in the runtime, not in user code (the engine catches that): drop what this
    /// instance held in memory and reload it from the store. An orchestration that keeps
    /// failing so is failed instead of retried forever; its durable inputs come back at
    /// restart.
    fn internal_error(&mut self, instance: &InstanceId, message: &str) {
        tracing::error!(
            %instance,
            panic = %message,
            "internal error while running a turn; the instance is reloaded"
        );
        let attempts = self.shared.config.max_turn_attempts;
        let slot = self.slot(instance);
        slot.stale = true;
        slot.forget();
        let Kind::Orchestration(orchestration) = &mut slot.kind else {
            return;
        };
        slot.internal_errors += 1;
        if slot.internal_errors > attempts {
            tracing::error!(
                %instance,
                "the instance cannot even be failed; it stays as stored until the next start"
            );
            return;
        }
        if slot.internal_errors == attempts {
            orchestration.fail_with = Some(Failure::new(
                FailureKind::Internal,
                format!(
                    "the runtime failed {attempts} times running a turn of this instance (last: {message}); it is failed instead of retried forever. This is a bug in the runtime: please report it"
                ),
            ));
        }
        self.retry.push(instance.clone());
    }

    fn submit(&mut self, mut round: Writes, mut touched: Vec<InstanceId>) {
        if round.is_empty() {
            return;
        }
        touched.sort();
        touched.dedup();
        for instance in &touched {
            if let Some(slot) = self.slots.get_mut(instance) {
                slot.inflight += 1;
            }
        }
        if !touched.is_empty() {
            round.after.push(Dispatch::Committed {
                shard: self.index,
                instances: touched,
            });
        }
        let request = CommitRequest {
            batch: round.batch,
            after: round.after,
            execution_floor: round.execution_floor,
            generation: self.generation,
            consume: Vec::new(),
        };
        if !self.shared.writer.commit(request) {
            tracing::error!("the writer has stopped; a round of turns was not committed");
        }
    }

    /// Drops the instances `which` selects, with everything they hold in memory; their
    /// clients hear that this runtime no longer runs them.
    fn drop_instances(&mut self, which: impl Fn(&InstanceId) -> bool) {
        let dropped: Vec<InstanceId> = self.slots.keys().filter(|id| which(id)).cloned().collect();
        for instance in &dropped {
            if let Some(slot) = self.slots.remove(instance) {
                for input in slot.inputs {
                    if let Source::Client(reply) = input.source {
                        reply.send(Err(not_owned()));
                    }
                }
            }
        }
        self.ready.retain(|instance| !which(instance));
        self.retry.retain(|instance| !which(instance));
        for (instance, reply) in std::mem::take(&mut self.purges) {
            if which(&instance) {
                reply.send(Err(not_owned()));
            } else {
                self.purges.push((instance, reply));
            }
        }
    }

    /// After a failed commit nothing more is written: every waiting client hears why.
    fn refuse_everything(&mut self) {
        for instance in std::mem::take(&mut self.ready) {
            if let Some(slot) = self.slots.get_mut(&instance) {
                slot.queued = false;
                for input in std::mem::take(&mut slot.inputs) {
                    if let Source::Client(reply) = input.source {
                        reply.send(Err(Rejection::Poisoned));
                    }
                }
            }
        }
        for (_, reply) in std::mem::take(&mut self.purges) {
            reply.send(Err(Rejection::Poisoned));
        }
    }

    fn run_purges(&mut self, env: &Env, round: &mut Writes, touched: &mut Vec<InstanceId>) {
        for (instance, reply) in std::mem::take(&mut self.purges) {
            let busy = touched.contains(&instance);
            match purge::purge(self.slot(&instance), &instance, busy, env) {
                Purge::Later => self.purges.push((instance, reply)),
                Purge::Refused(rejection) => {
                    if matches!(rejection, Rejection::NotFound) {
                        self.slots.remove(&instance);
                    }
                    // Answered with the round's commit: a remote request is consumed by it.
                    round.after.push(Dispatch::Refuse(reply, rejection));
                }
                Purge::Purged(mut writes) => {
                    // Gone, as far as this shard knows, and in flight until the commit:
                    // another purge waits for it and then finds nothing, so each
                    // deletion is reported once.
                    let slot = self.slot(&instance);
                    slot.forget();
                    slot.set_record(None);
                    touched.push(instance);
                    writes.after.push(Dispatch::Reply(reply));
                    round.merge(writes);
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
            .filter(|(_, slot)| slot.is_evictable())
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

/// An input that names no start time.
fn input(content: Content, source: Source) -> Input {
    Input {
        content,
        source,
        terms: StartTerms::default(),
    }
}

/// An event for whichever execution of an orchestration is current.
fn orchestration_event(event: HistoryEvent) -> Content {
    Content::Event {
        execution: None,
        event,
    }
}

/// A client's operation on an entity (a signal: nobody waits for its result).
fn entity_operation(operation: String, input: Json) -> Content {
    Content::Entity(EntityMessage::Operation {
        operation,
        input,
        caller: None,
        reply: false,
    })
}

/// The answer to a command for an instance this runtime no longer runs.
fn not_owned() -> Rejection {
    Rejection::Moved
}

impl ShardMsg {
    /// The instance the message is for, when it is for one.
    fn instance(&self) -> Option<&InstanceId> {
        match self {
            ShardMsg::Inbox { message, .. } => Some(&message.target),
            ShardMsg::ActivityDone { key, .. } => Some(&key.instance),
            ShardMsg::TimerFired { key } => Some(&key.instance),
            ShardMsg::Damaged { instance, .. } => Some(instance),
            ShardMsg::Command { .. }
            | ShardMsg::Stored { .. }
            | ShardMsg::Committed { .. }
            | ShardMsg::Reset { .. }
            | ShardMsg::Forget { .. }
            | ShardMsg::Stop => None,
        }
    }
}
