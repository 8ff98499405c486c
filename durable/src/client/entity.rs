//! Entities from a client: [`EntityClient`], the typed signals `#[entity]` generates for
//! clients (`client.entity::<Counter>("k").signal().add(1).await`), and [`ClientEntity`],
//! a client's handle on one entity, for its signals and its state.

use super::{Client, Error};
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
    /// processed exactly once).
    ///
    /// # Errors
    /// An invalid entity key, a serialization error, the runtime stopping, store errors.
    pub async fn signal<I: Serialize>(&self, operation: &str, input: &I) -> Result<(), Error> {
        let id = self.id.clone()?;
        let input = Json::encode(input).map_err(|error| Error::InvalidInput {
            name: format!("{id}.{operation}"),
            message: error.to_string(),
        })?;
        self.client.signal_entity(&id, operation, input).await
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
    /// As [`Client::entity_state`].
    pub async fn state(&self) -> Result<Option<E>, Error> {
        let id = self.id.clone()?;
        self.client.entity_state_of::<E>(&id).await
    }
}
