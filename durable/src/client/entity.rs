//! Entities from a client: [`EntityClient`], the typed signals `#[entity]` generates for
//! clients (`client.entity::<Counter>("k").signal().add(1).await`), and [`ClientEntity`],
//! a client's handle on one entity, for its signals and its state; and the [`Client`]'s
//! operations on entities.

use super::backend::Command;
use super::error::Error;
use super::instances::{Client, decode_entity_continuation, encode_hex};
use super::status::{EntityPage, EntityStatus};
use crate::registry::Kind;
use durable_core::Entity;
use durable_types::{EntityId, InvalidInstanceId, Json};
use serde::Serialize;
use std::marker::PhantomData;

/// The typed client signals of an entity type. Implemented by `#[entity]` next to
/// [`Entity`], so that the entity trait itself knows nothing of clients. (It does not
/// require `Entity`, so that a state type that is not `Default`, `Serialize` or
/// `Deserialize` is reported once, at the `Entity` impl.)
pub trait EntityClient {
    /// Typed signals from a client (each is `async`).
    type ClientSignals;

    /// The typed client signals of one entity.
    fn client_signals(signaler: ClientSignaler) -> Self::ClientSignals;
}

/// The untyped half of the generated client proxies.
pub struct ClientSignaler {
    client: Client,
    id: Result<EntityId, InvalidInstanceId>,
}

impl ClientSignaler {
    /// Signals `operation` with `input`; returns once the signal is stored (and so will be
    /// processed exactly once). This is what the generated proxies
    /// (`client.entity::<Counter>(key).signal().add(1)`) call, with the operation and the
    /// input's type checked by the compiler, so it does not check them again; an untyped
    /// signal goes through [`Client::signal_entity`], which does.
    ///
    /// # Errors
    /// An invalid entity key, a serialization error, an entity type the runtime does not
    /// know ([`Error::NotRegistered`]), the runtime stopping, store errors.
    pub async fn signal<I: Serialize>(&self, operation: &str, input: &I) -> Result<(), Error> {
        let id = self.id.clone()?;
        let input = Json::encode(input).map_err(|error| Error::InvalidInput {
            name: format!("{id}.{operation}"),
            message: error.to_string(),
        })?;
        let command = Command::SignalEntity {
            entity: id,
            operation: operation.to_owned(),
            input,
        };
        self.client.submit_typed_signal(command).await
    }
}

/// A client's handle on an entity, for signals and its state.
pub struct ClientEntity<E: Entity + EntityClient> {
    client: Client,
    id: Result<EntityId, InvalidInstanceId>,
    entity: PhantomData<fn() -> E>,
}

impl<E: Entity + EntityClient> ClientEntity<E> {
    pub(super) fn new(client: Client, key: &str) -> ClientEntity<E> {
        ClientEntity {
            client,
            id: EntityId::new(E::NAME, key),
            entity: PhantomData,
        }
    }

    /// Its typed signals.
    pub fn signal(&self) -> E::ClientSignals {
        E::client_signals(ClientSignaler {
            client: self.client.clone(),
            id: self.id.clone(),
        })
    }

    /// Its current state (`None` if it has none).
    ///
    /// # Errors
    /// As [`Client::entity_state`]: [`Error::NotRegistered`] when the runtime does not
    /// register `E`, as for its signals.
    pub async fn state(&self) -> Result<Option<E>, Error> {
        let id = self.id.clone()?;
        self.client.entity_state_of::<E>(&id).await
    }
}

impl Client {
    /// Entity `E` with `key`: `.signal()` for its typed operations, `.state()` for its state.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # struct Counter { value: i64 }
    /// # #[entity]
    /// # impl Counter {
    /// #     fn add(&mut self, amount: i64) { self.value += amount; }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register_entity::<Counter>().start().await?;
    /// let client = runtime.client();
    /// client.entity::<Counter>("visits").signal().add(2).await?;
    /// let state = client.entity::<Counter>("visits").state().await?;
    /// assert_eq!(state.map(|counter| counter.value), Some(2));
    /// # runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn entity<E: Entity + EntityClient>(&self, key: impl AsRef<str>) -> ClientEntity<E> {
        ClientEntity::new(self.clone(), key.as_ref())
    }

    /// The state of entity `E` with `key`, or `None` if it has none (never signalled, or
    /// deleted). A client signal that returned has been applied, unless the entity was
    /// locked or had a backlog beyond `max_entity_queue`: then it is stored and applied
    /// in order soon after.
    ///
    /// # Errors
    /// [`Error::InvalidInstanceId`] for an invalid key, [`Error::NotRegistered`] when the
    /// runtime does not register `E` (as for its signals: the type is missing from the
    /// runtime builder), [`Error::OutputDecode`] if the stored state does not decode as
    /// `E`, store errors.
    pub async fn entity_state<E: Entity>(&self, key: impl AsRef<str>) -> Result<Option<E>, Error> {
        let id = EntityId::new(E::NAME, key.as_ref())?;
        self.entity_state_of(&id).await
    }

    pub(crate) async fn entity_state_of<E: Entity>(
        &self,
        id: &EntityId,
    ) -> Result<Option<E>, Error> {
        self.check_registered(id)?;
        let lookup = id.clone();
        let record = self.read(move |store| store.entity(&lookup)).await?;
        let Some(state) = record.and_then(|record| record.state) else {
            return Ok(None);
        };
        state
            .decode()
            .map(Some)
            .map_err(|error| Error::OutputDecode {
                instance: id.instance_id(),
                message: error.to_string(),
            })
    }

    /// Signals `operation` of `entity` with a JSON input: the untyped form, for HTTP handlers
    /// and tools. Returns once the signal is stored; it will run exactly once.
    ///
    /// The operation and its input are checked first, against the entity type the runtime
    /// registers: `input` must decode as the operation's argument (`null` for none, an
    /// array for several). A client of a database that another process runs (without the
    /// registry) skips the check: the entity refuses such a signal when it runs.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use durable::{client, Json};
    /// # #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// # struct Counter { value: i64 }
    /// # #[entity]
    /// # impl Counter {
    /// #     fn add(&mut self, amount: i64) { self.value += amount; }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let runtime = Runtime::builder().in_memory().register_entity::<Counter>().start().await?;
    /// let client = runtime.client();
    /// let visits = EntityId::new("Counter", "visits")?;
    /// client.signal_entity(&visits, "add", Json::parse("2")?).await?;
    /// let typo = client.signal_entity(&visits, "ad", Json::parse("2")?).await;
    /// assert!(matches!(typo, Err(client::Error::UnknownOperation { .. })));
    /// let mistyped = client.signal_entity(&visits, "add", Json::parse("\"two\"")?).await;
    /// assert!(matches!(mistyped, Err(client::Error::InvalidEntityInput { .. })));
    /// # runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotRegistered`] for an unknown entity type, [`Error::UnknownOperation`],
    /// [`Error::InvalidEntityInput`], [`Error::PayloadTooLarge`], store errors.
    pub async fn signal_entity(
        &self,
        entity: &EntityId,
        operation: &str,
        input: Json,
    ) -> Result<(), Error> {
        let command = Command::SignalEntity {
            entity: entity.clone(),
            operation: operation.to_owned(),
            input,
        };
        self.submit(command).await
    }

    /// Deletes an entity's state (its next operation starts from `Default`). The deletion
    /// runs in order with the entity's operations: after those already sent.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] for an unknown entity type, store errors.
    pub async fn delete_entity(&self, entity: &EntityId) -> Result<(), Error> {
        let command = Command::DeleteEntity {
            entity: entity.clone(),
        };
        self.submit(command).await
    }

    /// An entity's stored record: its state, lock and last change; `None` if it has none.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] when the runtime does not register the entity's type (as
    /// for its signals; [`Client::list_entities`] still lists what is stored of any type),
    /// store errors.
    pub async fn entity_status(&self, entity: &EntityId) -> Result<Option<EntityStatus>, Error> {
        self.check_registered(entity)?;
        let lookup = entity.clone();
        let record = self.read(move |store| store.entity(&lookup)).await?;
        Ok(record.map(EntityStatus::from_record))
    }

    /// Refuses a read of an entity whose type the runtime does not register, as its
    /// signals are refused: a typo or a missing `register_entity` shows at once, instead of
    /// as an entity that never has a state. (No registry here: nothing to check against.)
    fn check_registered(&self, entity: &EntityId) -> Result<(), Error> {
        match self.registry() {
            Some(registry) if !registry.has_entity(entity.name()) => Err(Error::NotRegistered {
                kind: Kind::Entity,
                name: entity.name().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// One page of entities, of type `name` (any case) or of every type, in id order.
    ///
    /// # Errors
    /// [`Error::InvalidContinuation`], store errors.
    pub async fn list_entities(
        &self,
        name: Option<&str>,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<EntityPage, Error> {
        let after = continuation.map(decode_entity_continuation).transpose()?;
        let page_size = page_size.max(1);
        // Entity names are held lowercased (they are case-insensitive).
        let name = name.map(str::to_lowercase);
        let mut records = self
            .read(move |store| {
                store.list_entities(name.as_deref(), after.as_ref(), page_size.saturating_add(1))
            })
            .await?;
        let more = records.len() > page_size;
        records.truncate(page_size);
        let continuation = match records.last() {
            Some(last) if more => Some(encode_hex(&last.id.to_string())),
            _ => None,
        };
        Ok(EntityPage {
            entities: records.into_iter().map(EntityStatus::from_record).collect(),
            continuation,
        })
    }

    /// Deletes the records of entities that have no state and are not locked — leftovers
    /// that take room and do nothing — and returns how many went. An entity that is
    /// signalled again starts afresh.
    ///
    /// # Errors
    /// Store errors.
    pub async fn purge_empty_entities(&self) -> Result<u64, Error> {
        let mut purged = 0;
        let mut after: Option<EntityId> = None;
        loop {
            let from = after.clone();
            let page = self
                .read(move |store| store.list_entities(None, from.as_ref(), 500))
                .await?;
            let Some(last) = page.last() else {
                return Ok(purged);
            };
            after = Some(last.id.clone());
            for record in page {
                if record.state.is_none() && record.lock.is_none() {
                    self.delete_entity(&record.id).await?;
                    purged += 1;
                }
            }
        }
    }
}
