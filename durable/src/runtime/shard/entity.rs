//! One round of an entity: its operations run one at a time, in arrival order, each on the
//! state left by the one before; all the operations of a round commit together with the
//! new state (written once) and the consumption of their messages — exactly once.
//!
//! An operation that fails or panics is undone: the state goes back to what the last good
//! operation left (operations on `&self` need no undo) and the caller hears the error.
//! While an orchestration holds the entity's lock, only its messages run; the others are
//! parked (stored, and kept in memory up to `max_entity_queue`) or spilled (stored only)
//! and run in order after the release.

use super::input::{Content, Input, Source};
use super::orchestration::park;
use super::slot::{HotEntity, Kind, Slot};
use super::slow;
use super::spill::{self, ReadBack};
use super::writes::{Env, Next, Step, Writes};
use crate::client::new_instance_id;
use crate::registry::{EntityEntry, ErasedEntity};
use crate::runtime::handle::Rejection;
use durable_core::{EntityContext, Limits, panic_message};
use durable_types::{
    EntityCaller, EntityId, EntityMessage, EntityRecord, Failure, FailureKind, HistoryEvent,
    InstanceId, Json, Message, Timestamp,
};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// The operation name of a client's `delete_entity`: not a Rust identifier, so no entity
/// method can have it.
pub(crate) const DELETE_OPERATION: &str = "$delete";

/// What a round does to an entity.
struct Work {
    id: EntityId,
    entry: EntityEntry,
    now: Timestamp,
    lock: Option<EntityCaller>,
    /// The record (state or lock) changed and must be written.
    changed: bool,
    /// The state the round's operations left, serialized right after the last one that
    /// changed it: what an undo goes back to and what the round writes.
    saved: Saved,
}

/// The state a round leaves, as far as it changed it.
enum Saved {
    /// Unchanged: the stored state is current.
    Stored,
    /// This state, serialized after the last operation that changed it.
    State(Json),
    /// Deleted: the next operation starts from `Default`.
    Deleted,
}

/// Runs the messages that arrived for entity `instance`.
pub(crate) fn step(slot: &mut Slot, instance: &InstanceId, env: &Env) -> Step {
    let mut writes = Writes::default();
    let id = EntityId::from_instance_id(instance).expect("an entity's slot is for `@name@key`");
    if slot.stale {
        if slot.inflight > 0 {
            return Step::new(writes, Next::Wait); // `committed` queues it again
        }
        slot.stale = false;
        slot.forget();
    }
    let Some(entry) = env.registry.entity(id.name()) else {
        not_registered(slot, &id, env, &mut writes);
        return Step::new(writes, Next::Wait);
    };
    let Kind::Entity(entity) = &mut slot.kind else {
        unreachable!("`{instance}` is an orchestration, stepped as an entity")
    };
    let hot = match entity.hot.take() {
        Some(hot) => entity.hot.insert(hot),
        None => match env.store.entity(&id) {
            Ok(record) => entity.hot.insert(HotEntity {
                record,
                ..HotEntity::default()
            }),
            Err(error) => {
                tracing::warn!(entity = %id, %error, "cannot read the entity; retrying");
                return Step::new(writes, Next::Retry);
            }
        },
    };
    let mut queue: VecDeque<Input> = std::mem::take(&mut slot.inputs).into();
    let lock = hot.lock().cloned();
    let read_back = match lock {
        None => spill::read_back(hot, slot.inflight > 0, instance, &mut queue, env),
        Some(_) => ReadBack::Done,
    };
    let mut work = Work {
        id,
        entry,
        now: env.now,
        lock,
        changed: false,
        saved: Saved::Stored,
    };
    let mut parked = Vec::new();
    while let Some(input) = queue.pop_front() {
        let mut round = Round {
            hot: &mut *hot,
            work: &mut work,
            queue: &mut queue,
            parked: &mut parked,
            instance,
            env,
            writes: &mut writes,
        };
        round.take(input);
    }
    save(hot, &work, &mut writes);
    slot.inputs = parked;
    let next = match read_back {
        ReadBack::Failed => Next::Retry,
        // The next page of stored messages goes in the next round. (If the oldest is not
        // durable yet, `committed` queues the entity once it is.)
        ReadBack::Done if !hot.spilled.is_empty() && work.lock.is_none() => Next::Again,
        ReadBack::Done | ReadBack::NotYetStored => Next::Wait,
    };
    Step::new(writes, next)
}

/// The state of one round while it takes its inputs one by one.
struct Round<'a> {
    hot: &'a mut HotEntity,
    work: &'a mut Work,
    queue: &'a mut VecDeque<Input>,
    parked: &'a mut Vec<Input>,
    instance: &'a InstanceId,
    env: &'a Env<'a>,
    writes: &'a mut Writes,
}

impl Round<'_> {
    /// Runs, parks, spills or drops one input.
    fn take(&mut self, input: Input) {
        if must_spill(self.hot, &self.work.lock, &input) {
            return self.spill(input);
        }
        let message = match &input.content {
            Content::Entity(message) => message,
            other => {
                tracing::debug!(entity = %self.work.id, input = other.kind(), "not an entity message; dropped");
                return self.writes.consume(input.source);
            }
        };
        match message {
            EntityMessage::Operation { caller, .. }
                if is_locked_against(&self.work.lock, caller.as_ref()) =>
            {
                self.park_or_spill(input);
            }
            EntityMessage::Operation {
                operation,
                caller: None,
                ..
            } if operation == DELETE_OPERATION => {
                self.delete_state();
                self.writes.consume(input.source);
            }
            EntityMessage::Operation { .. } => self.run_operation(input),
            EntityMessage::LockRequest { holder, .. }
                if is_locked_against(&self.work.lock, Some(holder)) =>
            {
                self.park_or_spill(input);
            }
            EntityMessage::LockRequest { .. } => self.lock(input),
            EntityMessage::LockRelease { holder } => {
                if self.work.lock.as_ref() == Some(holder) {
                    self.unlock();
                }
                self.writes.consume(input.source);
            }
        }
    }

    /// Takes the lock for the request's holder and passes the request on.
    fn lock(&mut self, input: Input) {
        let Content::Entity(EntityMessage::LockRequest {
            holder,
            entities,
            position,
        }) = input.content
        else {
            unreachable!("`lock` takes lock requests")
        };
        self.work.lock = Some(holder.clone());
        self.work.changed = true;
        pass_lock_on(holder, entities, position, self.env, self.writes);
        self.writes.consume(input.source);
    }

    /// Releases the lock; what waited for it runs now, before anything newer.
    fn unlock(&mut self) {
        self.work.lock = None;
        self.work.changed = true;
        for parked in std::mem::take(self.parked).into_iter().rev() {
            self.queue.push_front(parked);
        }
    }

    /// Keeps a message until the lock is released: in memory up to the queue bound; beyond
    /// it, only in the store (and read back later).
    fn park_or_spill(&mut self, input: Input) {
        if self.parked.len() >= self.env.config.max_entity_queue {
            self.spill(input);
        } else {
            let parked = park(self.instance, input, self.env, self.writes);
            self.parked.push(parked);
        }
    }

    /// Stores a message in the inbox (a client's is acknowledged once committed) and
    /// remembers only its sequence number.
    fn spill(&mut self, input: Input) {
        let parked = park(self.instance, input, self.env, self.writes);
        let Source::Inbox(key) = &parked.source else {
            unreachable!("a parked input is stored in the inbox")
        };
        // Usually the newest; a message sent by another instance may have been numbered
        // before one spilled already.
        if let Err(at) = self.hot.spilled.binary_search(&key.seq) {
            self.hot.spilled.insert(at, key.seq);
        }
        // Counted as in flight, so that `committed` brings the entity back once the
        // spilled message is readable.
        self.writes.touches = true;
    }

    fn run_operation(&mut self, input: Input) {
        let Content::Entity(EntityMessage::Operation {
            operation,
            input: argument,
            caller,
            reply,
        }) = input.content
        else {
            unreachable!("`run_operation` takes operations")
        };
        let ctx = EntityContext::new(self.work.id.clone(), self.work.now);
        let limits = self.env.config.limits;
        let started = Instant::now();
        let executed = with_state(self.hot, self.work, |state| {
            execute(state, &ctx, &operation, &argument, &limits)
        });
        slow::operation_took(started.elapsed(), &self.work.id, &operation, self.env);
        let result = match executed {
            Ok(executed) => self.settle(executed, &ctx),
            Err(failure) => Err(failure),
        };
        if let Err(failure) = &result {
            let id = &self.work.id;
            if reply {
                tracing::debug!(entity = %id, %operation, %failure, "entity operation failed");
            } else {
                // Nobody hears of a failed signal: say it loudly.
                tracing::warn!(entity = %id, %operation, %failure, "signalled entity operation failed; the state is unchanged");
            }
        }
        if let Some(caller) = caller.filter(|_| reply) {
            answer(caller, result, self.env, self.writes);
        }
        self.writes.consume(input.source);
    }

    /// Keeps what a successful operation did (its new state, its effects) or undoes what a
    /// failed one did; returns the operation's result.
    fn settle(&mut self, executed: Executed, ctx: &EntityContext) -> Result<Json, Failure> {
        match executed {
            Executed {
                outcome: Ok(_),
                saved: Some(Err(failure)),
                ..
            } => {
                undo(self.hot);
                Err(failure)
            }
            Executed {
                outcome: Ok(output),
                saved,
                ..
            } => {
                if let Some(Ok(json)) = saved {
                    self.work.saved = Saved::State(json);
                    self.work.changed = true;
                }
                self.apply_effects(ctx);
                Ok(output)
            }
            Executed {
                outcome: Err(failure),
                mutating,
                ..
            } => {
                if mutating {
                    undo(self.hot);
                }
                Err(failure)
            }
        }
    }

    /// Performs what an operation asked of its context: signals, orchestration starts,
    /// deletion.
    fn apply_effects(&mut self, ctx: &EntityContext) {
        let effects = ctx.take_effects();
        for (entity, operation, input) in effects.signals {
            let message = EntityMessage::Operation {
                operation,
                input,
                caller: None,
                reply: false,
            };
            let target = entity.instance_id();
            self.writes
                .send(self.env.ids, target, Message::Entity(message));
        }
        for (name, input) in effects.starts {
            let event = HistoryEvent::ExecutionStarted {
                name,
                input,
                parent: None,
                generation: 1,
            };
            self.writes
                .send_event(self.env.ids, new_instance_id(), None, event);
        }
        if effects.delete {
            self.delete_state();
        }
    }

    fn delete_state(&mut self) {
        undo(self.hot);
        self.work.saved = Saved::Deleted;
        self.work.changed = true;
    }
}

/// What running one operation on the live state gave.
struct Executed {
    /// The operation's output, or why it failed.
    outcome: Result<Json, Failure>,
    /// After an operation that changed the state, the state serialized at once (an
    /// operation whose state cannot be saved fails like one that returned an error).
    saved: Option<Result<Json, Failure>>,
    /// Whether the operation may change the state (takes `&mut self`).
    mutating: bool,
}

/// Runs `operation` on `state`, catching a panic, and saves the state it leaves.
fn execute(
    state: &mut dyn ErasedEntity,
    ctx: &EntityContext,
    operation: &str,
    argument: &Json,
    limits: &Limits,
) -> Executed {
    let mutating = !state.is_read_only(operation);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        state.dispatch(ctx, operation, argument)
    }));
    let outcome = match outcome {
        Ok(outcome) => outcome.map_err(durable_core::Error::into_failure),
        Err(panic) => {
            let instance = ctx.entity_id().instance_id();
            crate::panics::log_caught(Some(instance.as_str()), Some(operation));
            Err(Failure::new(
                FailureKind::Panic,
                format!(
                    "operation `{operation}` panicked: {}",
                    panic_message(&*panic)
                ),
            ))
        }
    };
    let saved = (outcome.is_ok() && mutating).then(|| {
        let json = state.save().map_err(durable_core::Error::into_failure)?;
        let what = || format!("state operation `{operation}` would leave");
        limits.check_payload(json.len(), what).map_err(|too_large| {
            let mut failure = too_large.into_failure();
            failure.message.push_str(
                "; the state is unchanged (split it over several entities, or keep large data elsewhere)",
            );
            failure
        })?;
        Ok(json)
    });
    Executed {
        outcome,
        saved,
        mutating,
    }
}

/// Runs `f` on the entity's typed state, bringing it into memory first: from the state
/// this round last saved, else the stored one, else `Default`.
fn with_state<T>(
    hot: &mut HotEntity,
    work: &Work,
    f: impl FnOnce(&mut dyn ErasedEntity) -> T,
) -> Result<T, Failure> {
    let state = match hot.state.take() {
        Some(state) => state,
        None => {
            let current = match &work.saved {
                Saved::State(json) => Some(json),
                Saved::Deleted => None,
                Saved::Stored => hot.record.as_ref().and_then(|record| record.state.as_ref()),
            };
            let state = match current {
                Some(json) => (work.entry.load)(json),
                None => (work.entry.new)(),
            };
            state.map_err(durable_core::Error::into_failure)?
        }
    };
    Ok(f(hot.state.insert(state).as_mut()))
}

/// Undoes an operation: the live state is dropped and comes back, when next needed, from
/// the state saved after the last good operation.
fn undo(hot: &mut HotEntity) {
    hot.state = None;
}

/// Answers an orchestration that called an operation.
fn answer(caller: EntityCaller, result: Result<Json, Failure>, env: &Env, writes: &mut Writes) {
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
    writes.send_event(env.ids, caller.instance, Some(caller.execution), event);
}

/// Writes the entity's record if the round changed it: its state (serialized once per
/// round) and its lock.
fn save(hot: &mut HotEntity, work: &Work, writes: &mut Writes) {
    if !work.changed {
        return;
    }
    let state = match &work.saved {
        Saved::Stored => hot.record.as_ref().and_then(|record| record.state.clone()),
        Saved::State(json) => Some(json.clone()),
        Saved::Deleted => None,
    };
    if state.is_none() && work.lock.is_none() {
        hot.record = None;
        writes.batch.delete_entity(work.id.clone());
    } else {
        let record = EntityRecord {
            id: work.id.clone(),
            state,
            lock: work.lock.clone(),
            last_modified: work.now,
        };
        writes.batch.put_entity(record.clone());
        hot.record = Some(record);
    }
    writes.touches = true;
}

/// Grants the lock on the next entity of the request, or tells the holder all are held.
fn pass_lock_on(
    holder: EntityCaller,
    entities: Vec<EntityId>,
    position: u32,
    env: &Env,
    writes: &mut Writes,
) {
    let next = position as usize + 1;
    match entities.get(next) {
        Some(entity) => {
            let target = entity.instance_id();
            let message = EntityMessage::LockRequest {
                holder,
                entities,
                position: next as u32,
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

/// The entity's type is not registered here. Clients hear so at once; so do
/// orchestrations that call it or lock it (their calls fail, their lock requests fail and
/// release what they took). Signals stay stored, for a runtime that has the type.
fn not_registered(slot: &mut Slot, id: &EntityId, env: &Env, writes: &mut Writes) {
    tracing::error!(entity = %id, "entity type `{}` is not registered; its signals stay stored", id.name());
    let failure = Failure::new(
        FailureKind::NotRegistered,
        format!(
            "entity type `{name}` is not registered with this runtime; add `.register_entity::<T>()` to the runtime builder, with `T` the type whose `#[entity]` is named `{name}`",
            name = id.name()
        ),
    );
    for input in std::mem::take(&mut slot.inputs) {
        let answer_to = match &input.content {
            Content::Entity(EntityMessage::Operation {
                caller: Some(caller),
                reply: true,
                ..
            }) => Some(caller.clone()),
            Content::Entity(EntityMessage::LockRequest { holder, .. }) => Some(holder.clone()),
            _ => None,
        };
        match (input.source, answer_to) {
            (Source::Client(reply), _) => {
                let name = id.name().to_owned();
                writes.refuse(reply, Rejection::EntityNotRegistered { name });
            }
            (source, Some(caller)) => {
                answer(caller, Err(failure.clone()), env, writes);
                writes.consume(source);
            }
            _ => {}
        }
    }
}

/// Whether a message must go to the store rather than be run or kept: older messages are
/// spilled and this one must not overtake them. The lock holder's own messages are the
/// exception: what is spilled waits for its release.
fn must_spill(hot: &HotEntity, lock: &Option<EntityCaller>, input: &Input) -> bool {
    let Some(oldest) = hot.spilled.front().copied() else {
        return false;
    };
    let newer = match &input.source {
        Source::Inbox(key) => key.seq > oldest,
        _ => true, // not numbered yet: newer than anything stored
    };
    newer && !is_from_holder(lock, &input.content)
}

/// Whether `content` comes from the orchestration holding the lock (and must not wait).
fn is_from_holder(lock: &Option<EntityCaller>, content: &Content) -> bool {
    let Some(holder) = lock else {
        return false;
    };
    match content {
        Content::Entity(EntityMessage::Operation {
            caller: Some(caller),
            ..
        }) => !is_locked_against(lock, Some(caller)),
        Content::Entity(EntityMessage::LockRelease { holder: releasing }) => releasing == holder,
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
