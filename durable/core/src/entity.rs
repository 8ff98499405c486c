//! Durable entities: small pieces of state addressed by (entity name, key) that process
//! operations one at a time (the aggregator pattern). `#[entity]` on an `impl` block
//! implements [`Entity`] and generates typed proxies, so an unknown operation or a wrong
//! argument type does not compile:
//!
//! - from an orchestrator, `ctx.entity::<Counter>("k").get().await` calls an operation
//!   and waits for its result; `.signal().add(5)` sends one without waiting;
//! - from a client, `client.entity::<Counter>("k").signal().add(1).await` signals, and
//!   `client.entity_state::<Counter>("k")` reads the state;
//! - from an entity operation, `ctx.entity::<Other>("k").signal().op(..)` signals.
//!
//! Critical sections: `ctx.lock_entities(&[a, b]).await` gives an orchestration exclusive
//! use of several entities until the returned [`EntityLock`] is dropped or the
//! orchestration ends.

use crate::context::OrchestrationContext;
use crate::error::{Error, ErrorKind};
use crate::function::Orchestrator;
use crate::state::State;
use crate::tasks::DurableTask;
use durable_types::{EntityId, Json, TaskId, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::SystemTime;

/// A durable entity type. Implemented by `#[entity]` on the type's `impl` block.
///
/// ```
/// use durable::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Counter {
///     value: i64,
/// }
///
/// #[entity]
/// impl Counter {
///     fn add(&mut self, amount: i64) {
///         self.value += amount;
///     }
///     fn reset(&mut self) {
///         self.value = 0;
///     }
///     fn get(&self) -> i64 {
///         self.value
///     }
/// }
///
/// #[orchestrator]
/// async fn bump(ctx: OrchestrationContext) -> Result<i64, Error> {
///     ctx.entity::<Counter>("visits").signal().add(1);
///     ctx.entity::<Counter>("visits").get().await
/// }
/// ```
pub trait Entity: Default + Serialize + DeserializeOwned + 'static {
    /// The registered name: the type's name unless `#[entity(name = "...")]`, lowercased.
    /// Entity names are case-insensitive, as in Durable Functions ([`EntityId`]s hold them
    /// lowercased), so a hand-written implementation must give a lowercase name.
    ///
    /// [`EntityId`]: durable_types::EntityId
    const NAME: &'static str;
    /// Typed calls from an orchestrator (each returns a durable task).
    type Calls<'a>;
    /// Typed signals (from an orchestrator or an entity).
    type Signals<'a>;

    /// The typed calls of one entity.
    fn calls(proxy: EntityProxy<'_>) -> Self::Calls<'_>;
    /// The typed signals of one entity.
    fn signals(signaler: EntitySignaler<'_>) -> Self::Signals<'_>;
    /// Runs `operation` with its JSON `input`, returning its JSON output.
    ///
    /// # Errors
    /// The operation's own error, an input that does not decode, an unknown operation.
    fn dispatch(
        &mut self,
        ctx: &EntityContext,
        operation: &str,
        input: &Json,
    ) -> Result<Json, Error>;
    /// Whether `operation` only reads the state (takes `&self`), so it needs no rollback.
    fn is_read_only(operation: &str) -> bool;
    /// The names of the operations.
    fn operations() -> &'static [&'static str];
    /// Whether `operation` exists and `input` decodes as its arguments, as
    /// [`Entity::dispatch`] will decode them: what a client checks before it sends an
    /// untyped signal. `#[entity]` generates it; the default checks the name only.
    ///
    /// # Errors
    /// [`OperationError::Unknown`], or [`OperationError::InvalidInput`] with the decoder's
    /// message.
    fn check_operation(operation: &str, input: &Json) -> Result<(), OperationError> {
        let _ = input;
        if Self::operations().contains(&operation) {
            Ok(())
        } else {
            Err(OperationError::Unknown)
        }
    }
    /// Where the type is written (`my_app::shop::Counter`): what tells two entity types
    /// registered under one name apart in the error. The default is the type's name as
    /// the compiler spells it.
    fn rust_path() -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// Why [`Entity::check_operation`] refuses an operation before it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationError {
    /// The entity has no operation of this name.
    Unknown,
    /// The input does not decode as the operation's arguments; what is wrong.
    InvalidInput(String),
}

/// Decodes an operation's input, as JSON, as its arguments `T` (one argument's type, or a
/// tuple of several): the one place the generated code requires `T: Deserialize`, which
/// both [`Entity::dispatch`] and [`Entity::check_operation`] go through, so that a type
/// that is not `Deserialize` is reported once.
///
/// # Errors
/// The decoder's message, when the input does not decode as `T`.
pub fn decode_arguments<T: DeserializeOwned>(input: &Json) -> Result<T, String> {
    input.decode().map_err(|error| error.to_string())
}

/// The error of an operation whose input did not decode as its arguments: `message` is
/// the decoder's.
pub fn invalid_input(entity: &str, operation: &str, message: String) -> Error {
    Error::new(
        ErrorKind::Serialization,
        format!(
            "the input of operation `{operation}` of entity `{entity}` does not decode: {message}"
        ),
    )
}

/// The check of the input of an operation without arguments: nothing, which is JSON
/// `null`.
///
/// # Errors
/// When the input is anything else.
pub fn check_no_input(input: &Json) -> Result<(), OperationError> {
    input.decode::<()>().map_err(|_| {
        OperationError::InvalidInput(
            "the operation takes no input; send `null` (over HTTP: no body)".to_owned(),
        )
    })
}

/// What an entity operation may do besides changing its state: signal other entities,
/// start orchestrations, delete its own state.
pub struct EntityContext {
    id: EntityId,
    now: Timestamp,
    effects: RefCell<Effects>,
}

/// What an operation asked of its context besides changing the state, for the runtime to
/// perform once the operation's round commits.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Signals to send: entity, operation, input.
    pub signals: Vec<(EntityId, String, Json)>,
    /// Orchestrations to start under new ids: orchestrator name, input.
    pub starts: Vec<(String, Json)>,
    /// Whether the entity's state is to be deleted.
    pub delete: bool,
}

impl EntityContext {
    /// The context of an operation of entity `id` in a round that runs at time `now`.
    pub fn new(id: EntityId, now: Timestamp) -> EntityContext {
        EntityContext {
            id,
            now,
            effects: RefCell::new(Effects::default()),
        }
    }

    /// What the operation asked for so far; the context keeps nothing of it.
    pub fn take_effects(&self) -> Effects {
        std::mem::take(&mut *self.effects.borrow_mut())
    }

    /// This entity's id.
    pub fn entity_id(&self) -> &EntityId {
        &self.id
    }

    /// The time of the round of operations this one belongs to.
    pub fn current_utc_datetime(&self) -> SystemTime {
        self.now.to_system_time()
    }

    /// Another entity, to signal.
    ///
    /// # Panics
    /// When `key` is not a valid entity key (the operation then fails, and its changes are
    /// undone).
    pub fn entity<E: Entity>(&self, key: impl AsRef<str>) -> SignalRef<'_, E> {
        SignalRef {
            sink: self,
            id: entity_id::<E>(key.as_ref()),
            entity: PhantomData,
        }
    }

    /// Starts orchestrator `O` with `input` (fire-and-forget) once this operation's round
    /// commits.
    pub fn start_orchestration<O: Orchestrator>(&self, orchestrator: O, input: O::Input) {
        let _ = orchestrator;
        let input = encode_or_panic(&input, O::NAME);
        self.effects
            .borrow_mut()
            .starts
            .push((O::NAME.to_owned(), input));
    }

    /// Deletes this entity's state when the operation ends; the next operation starts from
    /// `Default`.
    pub fn delete_state(&self) {
        self.effects.borrow_mut().delete = true;
    }
}

/// Where signals go: an orchestration records them in its history; an entity sends them
/// when its round commits.
pub trait SignalSink {
    /// Sends `operation` with `input` to `entity`.
    fn send_signal(&self, entity: EntityId, operation: &str, input: Json);
}

impl SignalSink for EntityContext {
    fn send_signal(&self, entity: EntityId, operation: &str, input: Json) {
        self.effects
            .borrow_mut()
            .signals
            .push((entity, operation.to_owned(), input));
    }
}

impl SignalSink for OrchestrationContext {
    fn send_signal(&self, entity: EntityId, operation: &str, input: Json) {
        self.signal_entity(&entity, operation, input);
    }
}

/// An entity addressed for signals only (from an entity operation).
pub struct SignalRef<'a, E: Entity> {
    sink: &'a dyn SignalSink,
    id: EntityId,
    entity: PhantomData<fn() -> E>,
}

impl<'a, E: Entity> SignalRef<'a, E> {
    /// Its typed signals.
    pub fn signal(&self) -> E::Signals<'a> {
        E::signals(EntitySignaler {
            sink: self.sink,
            id: self.id.clone(),
        })
    }
}

/// The untyped half of the generated orchestration proxies: calls one entity.
pub struct EntityProxy<'a> {
    ctx: &'a OrchestrationContext,
    /// An invalid key is reported by each call (as its error), not when the proxy is made.
    id: Result<EntityId, Error>,
}

impl<'a> EntityProxy<'a> {
    pub(crate) fn new(
        ctx: &'a OrchestrationContext,
        id: Result<EntityId, Error>,
    ) -> EntityProxy<'a> {
        EntityProxy { ctx, id }
    }

    /// Calls `operation` with `input`; the task resolves to its output, or to an error
    /// at once when the entity key is invalid or the input does not serialize.
    pub fn call<I: Serialize, T: DeserializeOwned>(
        &self,
        operation: &str,
        input: &I,
    ) -> DurableTask<T> {
        let id = match &self.id {
            Ok(id) => id,
            Err(error) => return self.ctx.failed_task(error.clone()),
        };
        match Json::encode(input) {
            Ok(input) => self.ctx.call_entity(id, operation, input),
            Err(error) => self.ctx.failed_task(Error::new(
                ErrorKind::Serialization,
                format!("the input of operation `{operation}` of entity `{id}` cannot be serialized to JSON: {error}"),
            )),
        }
    }

    /// The signals of the same entity.
    ///
    /// # Panics
    /// When the entity key is invalid (signals have no result to carry the error): the
    /// orchestration fails with the reason.
    pub fn signaler(&self) -> EntitySignaler<'a> {
        EntitySignaler {
            sink: self.ctx,
            id: self.id.clone().unwrap_or_else(|error| panic!("{error}")),
        }
    }

    /// The entity's id.
    ///
    /// # Errors
    /// When the key is invalid.
    pub fn id(&self) -> Result<&EntityId, Error> {
        self.id.as_ref().map_err(Error::clone)
    }
}

/// The untyped half of the generated signal proxies.
pub struct EntitySignaler<'a> {
    sink: &'a dyn SignalSink,
    id: EntityId,
}

impl EntitySignaler<'_> {
    /// Signals `operation` with `input`.
    pub fn signal<I: Serialize>(&self, operation: &str, input: &I) {
        let input = encode_or_panic(input, operation);
        self.sink.send_signal(self.id.clone(), operation, input);
    }
}

/// The id of entity `E` with `key`, or a panic that fails the caller (an orchestration or
/// an entity operation) with the reason.
fn entity_id<E: Entity>(key: &str) -> EntityId {
    EntityId::new(E::NAME, key)
        .unwrap_or_else(|error| panic!("invalid key for entity `{}`: {error}", E::NAME))
}

fn encode_or_panic<T: Serialize + ?Sized>(value: &T, what: &str) -> Json {
    Json::encode(value).unwrap_or_else(|error| {
        panic!("the input of `{what}` cannot be serialized to JSON: {error}")
    })
}

impl OrchestrationContext {
    /// Entity `E` with `key`: its typed operations, called and awaited, and `.signal()` for
    /// fire-and-forget operations.
    ///
    /// A key that is not a valid entity key makes each call fail with the reason (and a
    /// signal fail the orchestration).
    pub fn entity<E: Entity>(&self, key: impl AsRef<str>) -> E::Calls<'_> {
        E::calls(EntityProxy::new(self, self.entity_id::<E>(key)))
    }

    /// The id of entity `E` with `key`, for [`OrchestrationContext::lock_entities`].
    ///
    /// # Errors
    /// When `key` is not a valid entity key.
    pub fn entity_id<E: Entity>(&self, key: impl AsRef<str>) -> Result<EntityId, Error> {
        EntityId::new(E::NAME, key.as_ref()).map_err(Error::from)
    }

    /// Locks `entities` for this orchestration (a critical section): until the returned
    /// [`EntityLock`] is dropped or the orchestration ends (completes, fails or is
    /// terminated), the entities run only this orchestration's operations; others wait.
    /// Locks are taken in one global order, so two orchestrations locking the same
    /// entities cannot deadlock.
    ///
    /// The rules of a critical section, which keep it deadlock-free: lock every entity it
    /// needs in one call (locking again while holding or acquiring locks fails), call only
    /// the locked entities (signals may go anywhere), and start no sub-orchestration. A
    /// call that breaks one fails at once with [`ErrorKind::LockingRules`].
    ///
    /// The locks are released by messages sent when the guard drops or the orchestration
    /// ends: an entity may show its lock for a moment after the orchestration's end is
    /// visible to a client.
    ///
    /// [`ErrorKind::LockingRules`]: ErrorKind::LockingRules
    ///
    /// ```
    /// use durable::prelude::*;
    /// # #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// # struct Account { balance: i64 }
    /// # #[entity]
    /// # impl Account {
    /// #     fn deposit(&mut self, amount: i64) { self.balance += amount; }
    /// #     fn withdraw(&mut self, amount: i64) { self.balance -= amount; }
    /// #     fn balance(&self) -> i64 { self.balance }
    /// # }
    /// #[orchestrator]
    /// async fn transfer(ctx: OrchestrationContext, (from, to, amount): (String, String, i64)) -> Result<bool, Error> {
    ///     let accounts = [ctx.entity_id::<Account>(&from)?, ctx.entity_id::<Account>(&to)?];
    ///     let _lock = ctx.lock_entities(&accounts).await?;
    ///     if ctx.entity::<Account>(&from).balance().await? < amount {
    ///         return Ok(false); // the locks are released as the guard drops
    ///     }
    ///     ctx.entity::<Account>(&from).withdraw(amount).await?;
    ///     ctx.entity::<Account>(&to).deposit(amount).await?;
    ///     Ok(true)
    /// }
    /// ```
    pub fn lock_entities(&self, entities: &[EntityId]) -> LockTask {
        let mut sorted = entities.to_vec();
        sorted.sort();
        sorted.dedup();
        let task = self.acquire_locks(sorted.clone());
        LockTask {
            task,
            state: self.state(),
            entities: sorted,
        }
    }
}

/// The future of [`OrchestrationContext::lock_entities`].
#[must_use = "the locks are held from when the task completes until the guard is dropped"]
pub struct LockTask {
    task: DurableTask<()>,
    state: Rc<RefCell<State>>,
    entities: Vec<EntityId>,
}

impl std::future::Future for LockTask {
    type Output = Result<EntityLock, Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.task).poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(Err(error)) => std::task::Poll::Ready(Err(error)),
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(EntityLock {
                id: this.task.task_id(),
                state: Rc::clone(&this.state),
                entities: std::mem::take(&mut this.entities),
            })),
        }
    }
}

/// Exclusive use of some entities; dropping it releases them.
pub struct EntityLock {
    id: Option<TaskId>,
    state: Rc<RefCell<State>>,
    entities: Vec<EntityId>,
}

impl EntityLock {
    /// The locked entities, in lock order.
    pub fn entities(&self) -> &[EntityId] {
        &self.entities
    }

    /// Releases the locks now (the same as dropping the guard).
    pub fn release(self) {}
}

impl Drop for EntityLock {
    fn drop(&mut self) {
        if let Some(id) = self.id
            && let Ok(mut state) = self.state.try_borrow_mut()
        {
            state.release_locks(id);
        }
    }
}

/// Decodes an operation's input (used by the generated dispatch).
///
/// # Errors
/// When the input does not decode as `T`.
pub fn decode_input<T: DeserializeOwned>(
    entity: &str,
    operation: &str,
    input: &Json,
) -> Result<T, Error> {
    decode_arguments(input).map_err(|message| invalid_input(entity, operation, message))
}

/// Encodes an operation's output (used by the generated dispatch).
///
/// # Errors
/// When the output cannot be serialized.
pub fn encode_output<T: Serialize>(
    entity: &str,
    operation: &str,
    output: &T,
) -> Result<Json, Error> {
    Json::encode(output).map_err(|error| {
        Error::new(
            ErrorKind::Serialization,
            format!("the output of operation `{operation}` of entity `{entity}` cannot be serialized: {error}"),
        )
    })
}

/// The error for an operation the entity does not have (untyped callers only: typed
/// proxies cannot name one).
pub fn unknown_operation(entity: &str, operation: &str, known: &[&str]) -> Error {
    Error::new(
        ErrorKind::NotRegistered,
        format!(
            "entity `{entity}` has no operation `{operation}`; its operations are: {}",
            known.join(", ")
        ),
    )
}
