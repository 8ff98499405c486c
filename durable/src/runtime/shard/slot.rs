//! What a shard keeps of one instance between rounds — its [`Slot`] — and the [`Input`]s
//! waiting for it: each with what it asks ([`Content`]) and where it came from
//! ([`Source`]: what consuming it deletes or answers).

use super::super::handle::ReplySender;
use super::routing::Lifecycle;
use crate::registry::ErasedEntity;
use durable_core::Engine;
use durable_types::{
    ActivityKey, EntityMessage, EntityRecord, ExecutionId, Failure, HistoryEvent, InboxKey,
    InboxMessage, InstanceId, InstanceRecord, Message, TimerKey, Timestamp,
};
use std::collections::VecDeque;

/// One input waiting for an instance's next turn (or an entity's next round).
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) content: Content,
    pub(crate) source: Source,
    /// For a client's start: not before this time.
    pub(crate) start_at: Option<Timestamp>,
}

/// What an input asks of its instance.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Content {
    /// An event for an orchestration's history: a start, a task's result, an external
    /// event, a lifecycle request. `execution` is the one it is for (`None`: whichever is
    /// current).
    Event {
        execution: Option<ExecutionId>,
        event: HistoryEvent,
    },
    /// The scheduled start of `execution` came due (its timer fired).
    ScheduledStartDue { execution: ExecutionId },
    /// A request to an entity.
    Entity(EntityMessage),
}

impl Content {
    /// The content of a stored inbox message.
    pub(crate) fn of(message: Message) -> Content {
        match message {
            Message::Event { execution, event } => Content::Event { execution, event },
            Message::Entity(message) => Content::Entity(message),
        }
    }

    /// The inbox message that stores this content for `target`, when it can wait in the
    /// inbox (a scheduled start never waits: it starts its execution or is dropped).
    pub(crate) fn to_message(&self, target: &InstanceId) -> InboxMessage {
        let body = match self {
            Content::Event { execution, event } => Message::Event {
                execution: *execution,
                event: event.clone(),
            },
            Content::Entity(message) => Message::Entity(message.clone()),
            Content::ScheduledStartDue { .. } => {
                unreachable!("a scheduled start is never parked: it starts or is dropped")
            }
        };
        InboxMessage {
            target: target.clone(),
            body,
        }
    }

    /// The execution it names, if it names one.
    pub(crate) fn execution(&self) -> Option<ExecutionId> {
        match self {
            Content::Event { execution, .. } => *execution,
            Content::ScheduledStartDue { execution } => Some(*execution),
            Content::Entity(_) => None,
        }
    }

    /// A short name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Content::Event { event, .. } => event.kind(),
            Content::ScheduledStartDue { .. } => "ScheduledStartDue",
            Content::Entity(message) => message.kind(),
        }
    }
}

/// Where an input came from: what consuming it deletes or answers.
#[derive(Debug)]
pub(crate) enum Source {
    /// A stored inbox message.
    Inbox(InboxKey),
    /// An activity's result; its work item is stored.
    Activity(ActivityKey),
    /// A timer's firing; the timer is stored.
    Timer(TimerKey),
    /// A client's command, answered after the commit that consumes it.
    Client(ReplySender),
}

/// An instance record as far as a shard knows it.
// One per instance, kept in place in the shard's map: the size of a record is not worth
// a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
pub(crate) enum Loaded {
    /// Not read from the store yet.
    #[default]
    Unloaded,
    /// Read: there is no such instance.
    Absent,
    /// Read (and kept current by the shard's own writes).
    Present(InstanceRecord),
}

impl Loaded {
    /// The record, if the instance exists.
    pub(crate) fn record(&self) -> Option<&InstanceRecord> {
        match self {
            Loaded::Present(record) => Some(record),
            Loaded::Unloaded | Loaded::Absent => None,
        }
    }

    /// The record, for a change the instance's turn makes.
    pub(crate) fn record_mut(&mut self) -> Option<&mut InstanceRecord> {
        match self {
            Loaded::Present(record) => Some(record),
            Loaded::Unloaded | Loaded::Absent => None,
        }
    }

    pub(crate) fn is_loaded(&self) -> bool {
        !matches!(self, Loaded::Unloaded)
    }
}

/// What a shard keeps of one orchestration instance.
#[derive(Default)]
pub(crate) struct Orchestration {
    pub(crate) record: Loaded,
    /// The engine with the live orchestrator future: the instance is *hot*.
    pub(crate) engine: Option<Engine>,
    /// Set when the execution must fail without running its code again (the runtime
    /// failed too often on its turns, or a message for it is damaged): the reason.
    pub(crate) fail_with: Option<Failure>,
}

impl Orchestration {
    /// Where the instance stands, for routing.
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        Lifecycle::of(self.record.record(), self.engine.is_some())
    }
}

/// What a shard keeps of one entity.
#[derive(Default)]
pub(crate) struct Entity {
    /// The stored record and the live state, once read.
    pub(crate) hot: Option<HotEntity>,
}

/// An entity's record and its state, live in memory between rounds.
#[derive(Default)]
pub(crate) struct HotEntity {
    /// The stored record (`None`: the entity has no state and no lock).
    pub(crate) record: Option<EntityRecord>,
    /// The typed state, decoded once and kept; `None` until first needed, and after an
    /// operation is undone (it comes back from the last saved state).
    pub(crate) state: Option<Box<dyn ErasedEntity>>,
    /// Messages stored in the inbox but not kept in memory because the entity's queue was
    /// full, by inbox sequence number (arrival order), oldest first. They are read back in
    /// pages; while any remain, newer messages join them instead of overtaking them.
    pub(crate) spilled: VecDeque<u64>,
}

impl HotEntity {
    /// The orchestration holding the entity's lock.
    pub(crate) fn lock(&self) -> Option<&durable_types::EntityCaller> {
        self.record.as_ref().and_then(|record| record.lock.as_ref())
    }
}

/// What an instance is, in a shard.
#[allow(clippy::large_enum_variant)] // as `Loaded`
pub(crate) enum Kind {
    Orchestration(Orchestration),
    Entity(Entity),
}

/// What a shard knows of one instance: its inputs, its place in the shard's bookkeeping,
/// and its own state.
pub(crate) struct Slot {
    /// Inputs of the next turn, and inputs parked (stored) until the instance can take them.
    pub(crate) inputs: Vec<Input>,
    /// Whether the instance is in the shard's ready list.
    pub(crate) queued: bool,
    /// Commits sent to the writer with this instance's writes and not yet durable.
    pub(crate) inflight: u32,
    /// The round of the last turn, for eviction.
    pub(crate) touched: u64,
    /// What memory holds may be ahead of the store and wrong (an internal error broke a
    /// turn): reload once the commits in flight are durable.
    pub(crate) stale: bool,
    /// Internal errors while running this instance's turns, in this process.
    pub(crate) internal_errors: u32,
    pub(crate) kind: Kind,
}

impl Slot {
    /// An empty slot for `instance` (an entity's `@name@key`, or an orchestration).
    pub(crate) fn new(instance: &InstanceId) -> Slot {
        let kind = if instance.is_entity() {
            Kind::Entity(Entity::default())
        } else {
            Kind::Orchestration(Orchestration::default())
        };
        Slot {
            inputs: Vec::new(),
            queued: false,
            inflight: 0,
            touched: 0,
            stale: false,
            internal_errors: 0,
            kind,
        }
    }

    /// Forgets what memory held of the instance, which is read again when next needed.
    pub(crate) fn forget(&mut self) {
        match &mut self.kind {
            Kind::Orchestration(orchestration) => {
                orchestration.record = Loaded::Unloaded;
                orchestration.engine = None;
            }
            Kind::Entity(entity) => entity.hot = None,
        }
    }

    /// Whether nothing about this instance needs memory: ended or unknown (for an entity:
    /// without state, lock or spilled messages), nothing pending.
    pub(crate) fn is_idle_and_done(&self) -> bool {
        if self.inflight > 0 || !self.inputs.is_empty() {
            return false;
        }
        match &self.kind {
            Kind::Entity(entity) => entity.hot.as_ref().is_none_or(|hot| {
                hot.record.is_none() && hot.state.is_none() && hot.spilled.is_empty()
            }),
            Kind::Orchestration(orchestration) => matches!(
                orchestration.lifecycle(),
                Lifecycle::Absent | Lifecycle::Ended(_)
            ),
        }
    }

    /// Whether it can be dropped from memory without losing anything: no input waits and
    /// no commit is in flight (an entity with spilled messages keeps the list of them).
    pub(crate) fn is_evictable(&self) -> bool {
        self.inflight == 0
            && self.inputs.is_empty()
            && match &self.kind {
                Kind::Entity(entity) => {
                    entity.hot.as_ref().is_none_or(|hot| hot.spilled.is_empty())
                }
                Kind::Orchestration(_) => true,
            }
    }
}
