//! Entities in a shard: operations run one at a time, in arrival order, each on the state
//! left by the one before; all the operations of a round commit together with the new
//! state (written once) and the consumption of their messages — exactly once.
//!
//! An operation that fails or panics is undone: the state goes back to its snapshot
//! taken before the operation (operations on `&self` need none) and the caller hears the
//! error. While an orchestration holds the entity's lock, only its messages run; the
//! others wait, stored durably, and run in order after the release.

use super::{Input, Round, Shard, Source, consume};
use crate::client;
use crate::core::panic_message;
use crate::entity::{EntityContext, EntityEntry, ErasedEntity};
use crate::runtime::writer::Dispatch;
use durable_store::{
    EntityCaller, EntityId, EntityRecord, Failure, FailureKind, HistoryEvent, InstanceId, Json,
    Timestamp,
};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The operation name of a client's `delete_entity`: not a Rust identifier, so no entity
/// method can have it.
pub(super) const DELETE_OPERATION: &str = "$delete";

/// An entity's record and its state, live in memory between rounds.
#[derive(Default)]
pub(crate) struct Hot {
    /// The stored record (`None`: the entity has no state and no lock).
    record: Option<EntityRecord>,
    /// The typed state, decoded once and kept; `None` until first needed.
    state: Option<Box<dyn ErasedEntity>>,
    /// Messages stored in the inbox but not kept in memory because the entity's queue was
    /// full, by inbox sequence number (arrival order), oldest first. They are read back in
    /// pages; while any remain, newer messages join them instead of overtaking them.
    spilled: VecDeque<u64>,
}

impl Hot {
    /// Whether there is nothing to keep: no state, no lock, nothing spilled.
    pub(crate) fn is_empty(&self) -> bool {
        self.record.is_none() && self.state.is_none() && self.spilled.is_empty()
    }

    /// Whether no message is kept in the store alone.
    pub(crate) fn has_nothing_spilled(&self) -> bool {
        self.spilled.is_empty()
    }
}

/// What a round does to an entity.
struct Work {
    id: EntityId,
    entry: EntityEntry,
    now: Timestamp,
    lock: Option<EntityCaller>,
    /// The record (state or lock) changed and must be written.
    changed: bool,
    /// The state as of the last operation that changed it this round, serialized right
    /// after it (`Some(None)`: deleted); `None` while the stored state is current. It is
    /// what an undo goes back to and what the round writes.
    state_json: Option<Option<Json>>,
}

impl Shard {
    /// Runs the operations that arrived for an entity.
    pub(super) fn run_entity(&mut self, instance: &InstanceId, round: &mut Round) {
        let Some(id) = EntityId::from_instance_id(instance) else {
            self.slots.remove(instance);
            return;
        };
        let now = self.shared.clock.turn_timestamp();
        if let Some(slot) = self.slots.get_mut(instance) {
            slot.touched = self.round;
            slot.queued = false;
            if slot.stale {
                if slot.inflight > 0 {
                    return; // `committed` queues it again once the store is current
                }
                slot.stale = false;
                slot.entity = None;
            }
        }
        let Some(entry) = self.shared.registry.entity(id.name()) else {
            self.entity_not_registered(instance, &id, round);
            return;
        };
        if let Err(error) = self.load_entity(instance, &id) {
            tracing::warn!(entity = %id, %error, "cannot read the entity; retrying");
            self.retry.push(instance.clone());
            return;
        }
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        let mut queue: VecDeque<Input> = std::mem::take(&mut slot.inputs).into();
        let lock = slot
            .entity
            .as_ref()
            .and_then(|hot| hot.record.as_ref())
            .and_then(|record| record.lock.clone());
        let mut spill_visible = true;
        if lock.is_none() {
            spill_visible = self.read_back_spilled(instance, &mut queue);
        }
        let mut work = Work {
            id,
            entry,
            now,
            lock,
            changed: false,
            state_json: None,
        };
        let mut waiting = Vec::new();
        while let Some(input) = queue.pop_front() {
            self.entity_input(instance, &mut work, input, &mut queue, &mut waiting, round);
        }
        self.save_entity(instance, &work, round);
        let mut more_spilled = false;
        if let Some(slot) = self.slots.get_mut(instance) {
            slot.inputs = waiting;
            more_spilled = slot
                .entity
                .as_ref()
                .is_some_and(|hot| !hot.spilled.is_empty());
        }
        if more_spilled && work.lock.is_none() && spill_visible {
            // The next page of stored messages goes in the next round. (If the oldest is
            // not durable yet, `committed` queues the entity once it is.)
            self.queue(instance.clone());
        }
    }

    /// Whether the entity has spilled messages that could run now (it is not locked).
    pub(super) fn has_runnable_spill(&self, instance: &InstanceId) -> bool {
        self.slots
            .get(instance)
            .and_then(|slot| slot.entity.as_ref())
            .is_some_and(|hot| {
                !hot.spilled.is_empty()
                    && hot
                        .record
                        .as_ref()
                        .is_none_or(|record| record.lock.is_none())
            })
    }

    /// Puts the oldest page of spilled messages at the front of the queue: they arrived
    /// before anything newer. Returns `false` when the oldest one is not readable yet: the
    /// commit that stores it is still in flight (`committed` brings the entity back).
    fn read_back_spilled(&mut self, instance: &InstanceId, queue: &mut VecDeque<Input>) -> bool {
        let bound = self.shared.config.max_entity_queue;
        let Some(slot) = self.slots.get(instance) else {
            return true;
        };
        let in_flight = slot.inflight > 0;
        let Some(first) = slot
            .entity
            .as_ref()
            .and_then(|hot| hot.spilled.front().copied())
        else {
            return true;
        };
        let limit = bound * 2;
        let mut after = first.checked_sub(1);
        let mut loaded = Vec::new();
        loop {
            let page = match self.shared.store.inbox_page(instance, after, limit) {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%instance, %error, "cannot read spilled messages; retrying");
                    self.retry.push(instance.clone());
                    return true;
                }
            };
            let full = page.len() == limit;
            after = page.last().map(|(key, _)| key.seq);
            let Some(hot) = self
                .slots
                .get_mut(instance)
                .and_then(|slot| slot.entity.as_mut())
            else {
                return true;
            };
            for (key, message) in page {
                if loaded.len() >= bound {
                    break;
                }
                // Not one of ours: a message kept in memory, or consumed by a commit in
                // flight.
                if hot.spilled.binary_search(&key.seq).is_err() {
                    continue;
                }
                if hot.spilled.front().is_some_and(|oldest| *oldest < key.seq) {
                    if in_flight {
                        // The oldest is not stored yet (sequence numbers are handed out
                        // before commits, which may land in another order): wait for it.
                        return !loaded.is_empty() && push_front(queue, loaded);
                    }
                    // Nothing of this entity is in flight, so it is gone; never expected.
                    while hot.spilled.front().is_some_and(|oldest| *oldest < key.seq) {
                        if let Some(missing) = hot.spilled.pop_front() {
                            tracing::error!(%instance, seq = missing, "a spilled message is missing from the store");
                        }
                    }
                }
                hot.spilled.pop_front();
                loaded.push(Input {
                    event: message.event,
                    execution: message.execution,
                    source: Source::Inbox(key),
                    start_at: None,
                });
            }
            if !loaded.is_empty() || hot.spilled.is_empty() {
                break;
            }
            if !full {
                if !in_flight {
                    tracing::error!(%instance, count = hot.spilled.len(), "spilled messages are missing from the store");
                    hot.spilled.clear();
                    return true;
                }
                return false; // not stored yet
            }
            // A page of messages that are not spilled ones: read on.
        }
        push_front(queue, loaded)
    }

    fn load_entity(
        &mut self,
        instance: &InstanceId,
        id: &EntityId,
    ) -> Result<(), durable_store::Error> {
        let slot = self.slots.entry(instance.clone()).or_default();
        if slot.entity.is_none() {
            let record = self.shared.store.entity(id)?;
            slot.entity = Some(Hot {
                record,
                state: None,
                spilled: VecDeque::new(),
            });
        }
        Ok(())
    }

    /// Runs, defers or drops one input.
    fn entity_input(
        &mut self,
        instance: &InstanceId,
        work: &mut Work,
        input: Input,
        queue: &mut VecDeque<Input>,
        waiting: &mut Vec<Input>,
        round: &mut Round,
    ) {
        if self.must_spill(instance, &work.lock, &input) {
            self.spill(instance, input, round);
            return;
        }
        match &input.event {
            HistoryEvent::EntityOperation {
                caller, operation, ..
            } => {
                if is_locked_against(&work.lock, caller.as_ref()) {
                    self.wait(instance, input, waiting, round);
                } else if operation == DELETE_OPERATION && caller.is_none() {
                    self.delete_state(instance, work);
                    consume(instance, input.source, round);
                } else {
                    self.run_operation(instance, work, input, round);
                }
            }
            HistoryEvent::EntityLockRequest {
                holder,
                entities,
                position,
            } => {
                if is_locked_against(&work.lock, Some(holder)) {
                    self.wait(instance, input, waiting, round);
                    return;
                }
                let (holder, entities, position) = (holder.clone(), entities.clone(), *position);
                work.lock = Some(holder.clone());
                work.changed = true;
                self.pass_lock_on(holder, entities, position, round);
                consume(instance, input.source, round);
            }
            HistoryEvent::EntityLockRelease { holder } => {
                if work.lock.as_ref() == Some(holder) {
                    work.lock = None;
                    work.changed = true;
                    // What waited for the lock runs now, before anything newer.
                    for parked in std::mem::take(waiting).into_iter().rev() {
                        queue.push_front(parked);
                    }
                }
                consume(instance, input.source, round);
            }
            other => {
                tracing::debug!(entity = %work.id, event = other.kind(), "not an entity message; dropped");
                consume(instance, input.source, round);
            }
        }
    }

    /// Whether a message must go to the store rather than be run or kept: older messages
    /// are spilled and this one must not overtake them. The lock holder's own messages are
    /// the exception: what is spilled waits for its release.
    fn must_spill(
        &self,
        instance: &InstanceId,
        lock: &Option<EntityCaller>,
        input: &Input,
    ) -> bool {
        let Some(oldest) = self
            .slots
            .get(instance)
            .and_then(|slot| slot.entity.as_ref())
            .and_then(|hot| hot.spilled.front().copied())
        else {
            return false;
        };
        let newer = match &input.source {
            Source::Inbox(key) => key.seq > oldest,
            _ => true, // not numbered yet: newer than anything stored
        };
        newer && !is_from_holder(lock, &input.event)
    }

    /// Keeps a message until the lock is released: in memory up to the queue bound; beyond
    /// it, only in the store (and read back later).
    fn wait(
        &mut self,
        instance: &InstanceId,
        input: Input,
        waiting: &mut Vec<Input>,
        round: &mut Round,
    ) {
        if waiting.len() >= self.shared.config.max_entity_queue {
            self.spill(instance, input, round);
        } else {
            waiting.push(self.park(instance, input, round));
        }
    }

    /// Stores a message in the inbox (a client's is acknowledged once committed) and
    /// remembers only its sequence number.
    fn spill(&mut self, instance: &InstanceId, input: Input, round: &mut Round) {
        let parked = self.park(instance, input, round);
        if let (Source::Inbox(key), Some(hot)) = (
            &parked.source,
            self.slots
                .get_mut(instance)
                .and_then(|slot| slot.entity.as_mut()),
        ) {
            // Usually the newest; a message sent by another instance may have been numbered
            // before one spilled already.
            if let Err(at) = hot.spilled.binary_search(&key.seq) {
                hot.spilled.insert(at, key.seq);
            }
        }
        // Counted as in flight, so that `committed` brings the entity back once the
        // spilled message is readable.
        round.touched.push(instance.clone());
    }

    /// Grants the lock on the next entity of the request, or tells the holder all are held.
    fn pass_lock_on(
        &mut self,
        holder: EntityCaller,
        entities: Vec<durable_store::EntityId>,
        position: u32,
        round: &mut Round,
    ) {
        let next = position as usize + 1;
        match entities.get(next) {
            Some(entity) => {
                let event = HistoryEvent::EntityLockRequest {
                    holder,
                    entities: entities.clone(),
                    position: next as u32,
                };
                self.send_message(entity.instance_id(), None, event, round);
            }
            None => {
                let event = HistoryEvent::LocksGranted {
                    id: holder.task,
                    entities,
                };
                self.send_message(holder.instance, Some(holder.execution), event, round);
            }
        }
    }

    fn run_operation(
        &mut self,
        instance: &InstanceId,
        work: &mut Work,
        input: Input,
        round: &mut Round,
    ) {
        let HistoryEvent::EntityOperation {
            operation,
            input: argument,
            caller,
            reply,
        } = input.event
        else {
            return;
        };
        let ctx = EntityContext::new(work.id.clone(), work.now);
        let max_payload = self.shared.config.limits.max_payload_bytes;
        let result = self.with_state(instance, work, |state| {
            let mutating = !state.is_read_only(&operation);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                state.dispatch(&ctx, &operation, &argument)
            }));
            let outcome = match outcome {
                Ok(outcome) => outcome.map_err(crate::Error::into_failure),
                Err(panic) => Err(Failure::new(
                    FailureKind::Panic,
                    format!(
                        "operation `{operation}` panicked: {}",
                        panic_message(&*panic)
                    ),
                )),
            };
            // The new state is serialized at once: an operation whose state cannot be
            // saved fails like one that returned an error.
            let saved = match (&outcome, mutating) {
                (Ok(_), true) => Some(
                    state
                        .save()
                        .map_err(crate::Error::into_failure)
                        .and_then(|json| {
                            let bytes = json.as_str().len();
                            if bytes > max_payload {
                                Err(Failure::new(
                                    FailureKind::LimitExceeded,
                                    format!(
                                        "operation `{operation}` would make the entity's state {bytes} bytes, above the limit of {max_payload} bytes (max_payload_bytes); the state is unchanged — split it over several entities or keep large data elsewhere"
                                    ),
                                ))
                            } else {
                                Ok(json)
                            }
                        }),
                ),
                _ => None,
            };
            (outcome, saved, mutating)
        });
        let result = match result {
            Ok((Ok(output), Some(Err(failure)), _)) => {
                drop(output);
                self.undo(instance);
                Err(failure)
            }
            Ok((Ok(output), saved, _)) => {
                if let Some(Ok(json)) = saved {
                    work.state_json = Some(Some(json));
                    work.changed = true;
                }
                self.apply_effects(instance, work, &ctx, round);
                Ok(output)
            }
            Ok((Err(failure), _, mutating)) => {
                if mutating {
                    self.undo(instance);
                }
                Err(failure)
            }
            Err(failure) => Err(failure),
        };
        if let Err(failure) = &result {
            if reply {
                tracing::debug!(entity = %work.id, %operation, %failure, "entity operation failed");
            } else {
                // Nobody hears of a failed signal: say it loudly.
                tracing::warn!(entity = %work.id, %operation, %failure, "signalled entity operation failed; the state is unchanged");
            }
        }
        if reply && let Some(caller) = caller {
            let event = match result {
                Ok(output) => HistoryEvent::EntityCompleted {
                    id: caller.task,
                    output,
                },
                Err(failure) => HistoryEvent::EntityFailed {
                    id: caller.task,
                    failure,
                },
            };
            self.send_message(caller.instance, Some(caller.execution), event, round);
        }
        consume(instance, input.source, round);
    }

    /// Runs `f` on the entity's typed state, bringing it into memory first: from the state
    /// this round last saved, else the stored one, else `Default`.
    fn with_state<T>(
        &mut self,
        instance: &InstanceId,
        work: &mut Work,
        f: impl FnOnce(&mut dyn ErasedEntity) -> T,
    ) -> Result<T, Failure> {
        let hot = self
            .slots
            .get_mut(instance)
            .and_then(|slot| slot.entity.as_mut())
            .ok_or_else(|| Failure::new(FailureKind::Internal, "the entity is not loaded"))?;
        if hot.state.is_none() {
            let current = match &work.state_json {
                Some(saved) => saved.as_ref(),
                None => hot.record.as_ref().and_then(|record| record.state.as_ref()),
            };
            let state = match current {
                Some(json) => (work.entry.load)(json),
                None => (work.entry.new)(),
            };
            hot.state = Some(state.map_err(crate::Error::into_failure)?);
        }
        match hot.state.as_mut() {
            Some(state) => Ok(f(state.as_mut())),
            None => Err(Failure::new(
                FailureKind::Internal,
                "the entity state vanished",
            )),
        }
    }

    /// Undoes an operation: the live state is dropped and comes back, when next needed,
    /// from the state saved after the last good operation.
    fn undo(&mut self, instance: &InstanceId) {
        if let Some(hot) = self
            .slots
            .get_mut(instance)
            .and_then(|slot| slot.entity.as_mut())
        {
            hot.state = None;
        }
    }

    /// Performs what an operation asked of its context: signals, orchestration starts,
    /// deletion.
    fn apply_effects(
        &mut self,
        instance: &InstanceId,
        work: &mut Work,
        ctx: &EntityContext,
        round: &mut Round,
    ) {
        let effects = ctx.take_effects();
        for (entity, operation, input) in effects.signals {
            let event = HistoryEvent::EntityOperation {
                operation,
                input,
                caller: None,
                reply: false,
            };
            self.send_message(entity.instance_id(), None, event, round);
        }
        for (name, input, id) in effects.starts {
            let id = id.unwrap_or_else(|| {
                InstanceId::new(uuid::Uuid::new_v4().simple().to_string())
                    .unwrap_or_else(|error| unreachable!("a UUID is a valid id: {error}"))
            });
            let event = HistoryEvent::ExecutionStarted {
                name,
                input,
                parent: None,
            };
            self.send_message(id, None, event, round);
        }
        if effects.delete {
            self.delete_state(instance, work);
        }
    }

    fn delete_state(&mut self, instance: &InstanceId, work: &mut Work) {
        self.undo(instance);
        work.state_json = Some(None);
        work.changed = true;
    }

    /// Writes the entity's record if the round changed it: its state (serialized once per
    /// round) and its lock.
    fn save_entity(&mut self, instance: &InstanceId, work: &Work, round: &mut Round) {
        if !work.changed {
            return;
        }
        let Some(hot) = self
            .slots
            .get_mut(instance)
            .and_then(|slot| slot.entity.as_mut())
        else {
            return;
        };
        let state = match &work.state_json {
            Some(saved) => saved.clone(),
            None => hot.record.as_ref().and_then(|record| record.state.clone()),
        };
        if state.is_none() && work.lock.is_none() {
            hot.record = None;
            round.batch.delete_entity(work.id.clone());
        } else {
            let record = EntityRecord {
                id: work.id.clone(),
                state,
                lock: work.lock.clone(),
                last_modified: work.now,
            };
            round.batch.put_entity(record.clone());
            hot.record = Some(record);
        }
        round.touched.push(instance.clone());
    }

    /// The entity's type is not registered here. Clients hear so at once; so do
    /// orchestrations that call it or lock it (their calls fail, their lock requests fail
    /// and release what they took). Signals stay stored, for a runtime that has the type.
    fn entity_not_registered(&mut self, instance: &InstanceId, id: &EntityId, round: &mut Round) {
        tracing::error!(entity = %id, "entity type `{}` is not registered; its signals stay stored", id.name());
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        let failure = Failure::new(
            FailureKind::NotRegistered,
            format!(
                "entity type `{}` is not registered with the runtime (`register_entity`)",
                id.name()
            ),
        );
        for input in std::mem::take(&mut slot.inputs) {
            let answer_to = match &input.event {
                HistoryEvent::EntityOperation {
                    caller: Some(caller),
                    reply: true,
                    ..
                } => Some(caller.clone()),
                HistoryEvent::EntityLockRequest { holder, .. } => Some(holder.clone()),
                _ => None,
            };
            match (input.source, answer_to) {
                (Source::Client(reply), _) => {
                    let error = client::Error::NotRegistered {
                        name: id.name().to_owned(),
                    };
                    round.after.push(Dispatch::Refuse(reply, error));
                }
                (source, Some(caller)) => {
                    let event = HistoryEvent::EntityFailed {
                        id: caller.task,
                        failure: failure.clone(),
                    };
                    self.send_message(caller.instance, Some(caller.execution), event, round);
                    consume(instance, source, round);
                }
                _ => {}
            }
        }
    }
}

/// Puts `loaded` at the front of `queue`, in order; returns whether there were any.
fn push_front(queue: &mut VecDeque<Input>, loaded: Vec<Input>) -> bool {
    let progress = !loaded.is_empty();
    for input in loaded.into_iter().rev() {
        queue.push_front(input);
    }
    progress
}

/// Whether `event` comes from the orchestration holding the lock (and must not wait).
fn is_from_holder(lock: &Option<EntityCaller>, event: &HistoryEvent) -> bool {
    let Some(holder) = lock else {
        return false;
    };
    match event {
        HistoryEvent::EntityOperation {
            caller: Some(caller),
            ..
        } => !is_locked_against(lock, Some(caller)),
        HistoryEvent::EntityLockRelease { holder: releasing } => releasing == holder,
        _ => false,
    }
}

/// Whether the entity is locked by an orchestration other than `caller`'s.
fn is_locked_against(lock: &Option<EntityCaller>, caller: Option<&EntityCaller>) -> bool {
    match (lock, caller) {
        (None, _) => false,
        (Some(holder), Some(caller)) => {
            holder.instance != caller.instance || holder.execution != caller.execution
        }
        (Some(_), None) => true,
    }
}
