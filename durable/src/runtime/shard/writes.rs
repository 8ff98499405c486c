//! The two halves of a step of one instance: [`Env`], what the step may read (the time,
//! the registered functions, the configuration, the store, where new ids come from), and
//! [`Writes`], what it returns — the batch to commit, the work to dispatch once the batch
//! is durable, the messages to other instances. Steps compute; the shard loop applies.

use super::super::Config;
use super::super::handle::{Rejection, ReplySender};
use super::super::ids::Ids;
use super::super::metrics::Metrics;
use super::super::writer::Dispatch;
use super::input::Source;
use crate::registry::Registry;
use durable_store::{Store, WriteBatch};
use durable_types::{ExecutionId, HistoryEvent, InstanceId, Message, Timestamp};

/// What a step reads.
pub(crate) struct Env<'a> {
    /// The time of the round (of an orchestration turn: see `Clock::turn_timestamp`).
    pub(crate) now: Timestamp,
    pub(crate) registry: &'a Registry,
    pub(crate) config: &'a Config,
    pub(crate) store: &'a dyn Store,
    pub(crate) ids: &'a Ids,
    pub(crate) metrics: &'a Metrics,
}

/// What a step writes, and what happens once that is durable.
#[derive(Default)]
pub(crate) struct Writes {
    pub(crate) batch: WriteBatch,
    pub(crate) after: Vec<Dispatch>,
    /// The highest execution id handed out, if the step started executions.
    pub(crate) execution_floor: Option<ExecutionId>,
    /// Whether the batch writes the instance's own state (its commit is then in flight).
    pub(crate) touches: bool,
}

impl Writes {
    /// Whether there is nothing to commit or do.
    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.after.is_empty() && self.execution_floor.is_none()
    }

    /// Adds `other`'s writes after these.
    pub(crate) fn merge(&mut self, mut other: Writes) {
        self.batch.append(&mut other.batch);
        self.after.append(&mut other.after);
        self.execution_floor = self.execution_floor.max(other.execution_floor);
        self.touches |= other.touches;
    }

    /// A new execution id, recorded so the stored floor covers it.
    pub(crate) fn new_execution(&mut self, ids: &Ids) -> ExecutionId {
        let execution = ids.execution();
        self.execution_floor = self.execution_floor.max(Some(execution));
        execution
    }

    /// Stores `body` for `target` in this commit and delivers it after.
    pub(crate) fn send(&mut self, ids: &Ids, target: InstanceId, body: Message) {
        let key = ids.inbox_key(&target);
        let message = durable_types::InboxMessage { target, body };
        self.batch.put_inbox(key.clone(), message.clone());
        self.after.push(Dispatch::Deliver(key, message));
    }

    /// Stores `event` for an orchestration in this commit and delivers it after;
    /// `execution` is the one it is for (`None`: whichever is current).
    pub(crate) fn send_event(
        &mut self,
        ids: &Ids,
        target: InstanceId,
        execution: Option<ExecutionId>,
        event: HistoryEvent,
    ) {
        self.send(ids, target, Message::Event { execution, event });
    }

    /// Consumes an input: deletes what stored it, or answers the client that sent it.
    pub(crate) fn consume(&mut self, source: Source) {
        match source {
            Source::Inbox(key) => self.batch.delete_inbox(key),
            Source::Activity(key) => self.batch.delete_activity(key),
            Source::Timer(key) => self.batch.delete_timer(key),
            Source::Client(reply) => self.after.push(Dispatch::Reply(reply)),
        }
        self.touches = true;
    }

    /// Answers a client with `rejection` once this commit (which makes the state the answer
    /// describes durable) is done.
    pub(crate) fn refuse(&mut self, reply: ReplySender, rejection: Rejection) {
        self.after.push(Dispatch::Refuse(reply, rejection));
    }
}

/// What the shard does with an instance after its step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing: it waits for its next input.
    Wait,
    /// Run it again in the next round (parked inputs it can take now, a page of spilled
    /// messages to read back).
    Again,
    /// Try again after a short delay (a store read failed).
    Retry,
}

/// A step's result: its writes and what comes next.
pub(crate) struct Step {
    pub(crate) writes: Writes,
    pub(crate) next: Next,
}

impl Step {
    pub(crate) fn new(writes: Writes, next: Next) -> Step {
        Step { writes, next }
    }
}
