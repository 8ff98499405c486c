//! What a shard keeps of one instance between rounds: its [`Slot`] — the inputs waiting
//! for it, its place in the shard's bookkeeping, and its own state (an orchestration's
//! record and engine, an entity's record, live state and spilled messages).

use super::input::Input;
use super::routing::Lifecycle;
use crate::registry::ErasedEntity;
use durable_core::Engine;
use durable_types::{EntityRecord, Failure, InstanceId, InstanceRecord};
use std::collections::VecDeque;

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

    /// Whether this is an orchestration whose record its next step must read first.
    pub(crate) fn lacks_record(&self) -> bool {
        !self.stale
            && matches!(&self.kind, Kind::Orchestration(orchestration)
                if !orchestration.record.is_loaded())
    }

    /// Sets the record read for an orchestration that [`Slot::lacks_record`].
    pub(crate) fn set_record(&mut self, record: Option<InstanceRecord>) {
        if let Kind::Orchestration(orchestration) = &mut self.kind {
            orchestration.record = match record {
                Some(record) => Loaded::Present(record),
                None => Loaded::Absent,
            };
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
