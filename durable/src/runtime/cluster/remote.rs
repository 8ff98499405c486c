//! Commands for instances that another process runs: sent as a `messages` row to the
//! instance's partition, answered by its owner through a `replies` row written by the
//! commit that carries the command out (see `poller.rs`). A worker sends so for the
//! instances of partitions it does not own; a client of the database alone
//! ([`Client::connect_postgres`]) for all of them.

use super::wire::{Envelope, WireReply};
use crate::client::{Backend, Client, Command, EndWatch, Error};
use crate::registry::Registry;
use crate::runtime::handle::Reply;
use durable_core::{BoxFuture, Limits};
use durable_store::{Outgoing, PostgresEngine, PostgresStore, Store, partition_of};
use durable_types::InstanceId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a command waits for a worker to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a client of the database alone looks whether an instance it waits for has
/// ended (a worker of another process cannot wake it).
pub(crate) const END_POLL: Duration = Duration::from_millis(25);

/// Sends `command` to whoever owns its instance and waits for the answer.
pub(crate) async fn submit(store: &Arc<PostgresStore>, command: Command) -> Result<Reply, Error> {
    let target = command.target();
    let request = i64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or_default(),
    ) & i64::MAX;
    let message = Outgoing {
        partition: partition_of(target.as_str()),
        target: target.to_string(),
        body: Envelope::Command {
            request,
            command: command.into(),
        }
        .encode(),
    };
    blocking(store, move |engine| engine.send_messages(&[message])).await?;
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(body) = blocking(store, move |engine| engine.take_reply(request)).await? {
            return Ok(WireReply::decode(&body));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Store(Arc::new(durable_store::Error::Unavailable(
                format!(
                    "no worker answered a command for `{target}` within {} s: check that workers run against this schema (the command stays queued, and runs when one does)",
                    ANSWER_TIMEOUT.as_secs()
                ),
            ))));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// Runs a blocking call of the engine off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<PostgresStore>,
    call: impl FnOnce(&PostgresEngine) -> Result<T, durable_store::Error> + Send + 'static,
) -> Result<T, Error> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || call(store.engine()))
        .await
        .map_err(|join| Error::Store(Arc::new(durable_store::Error::Backend(join.to_string()))))?
        .map_err(|error| Error::Store(Arc::new(error)))
}

/// A client's way to the instances of a schema that worker processes run.
struct PostgresBackend {
    store: Arc<PostgresStore>,
}

impl Backend for PostgresBackend {
    fn submit(&self, command: Command) -> BoxFuture<'static, Result<(), Error>> {
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            let target = command.target();
            submit(&store, command)
                .await?
                .map_err(|rejection| rejection.into_error(target))
        })
    }

    fn store(&self) -> Result<Arc<dyn Store>, Error> {
        Ok(Arc::clone(&self.store) as Arc<dyn Store>)
    }

    fn watch(&self, _instance: &InstanceId) -> Result<EndWatch, Error> {
        Ok(EndWatch::new(Arc::new(Notify::new()), |_| {}))
    }

    fn end_poll(&self, _instance: &InstanceId) -> Option<Duration> {
        Some(END_POLL)
    }

    fn registry(&self) -> Option<&Registry> {
        None
    }

    fn limits(&self) -> Limits {
        Limits::default()
    }
}

impl Client {
    /// A client of the instances that worker processes run over the PostgreSQL database
    /// `url` names (feature `postgres`), in schema `durable`: for a process that starts
    /// and watches orchestrations without running any (a web front end). Commands go to
    /// the worker that owns the instance and are answered once it committed what they
    /// asked; reads go to the database.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), durable::client::Error> {
    /// let client = durable::Client::connect_postgres("postgres://app@db/orders").await?;
    /// let page = client.list(&durable::InstanceQuery::default(), 10, None).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// A client without workers' registry checks names and inputs no earlier than the
    /// worker that runs the command; a command no worker answers within 30 s fails with
    /// [`durable_store::Error::Unavailable`] (it stays queued and runs when one does).
    ///
    /// # Errors
    /// [`Error::Store`] when the database cannot be reached.
    pub async fn connect_postgres(url: &str) -> Result<Client, Error> {
        Client::connect_postgres_schema(url, "durable").await
    }

    /// [`Client::connect_postgres`] in schema `schema` (a task hub).
    ///
    /// # Errors
    /// As [`Client::connect_postgres`].
    pub async fn connect_postgres_schema(url: &str, schema: &str) -> Result<Client, Error> {
        let (url, schema) = (url.to_owned(), schema.to_owned());
        let store = tokio::task::spawn_blocking(move || {
            let engine = PostgresEngine::connect_shared(&url, &schema)?;
            let place = std::path::PathBuf::from(format!("postgres schema {schema}"));
            durable_store::KvStore::with_engine(engine, &place)
        })
        .await
        .map_err(|join| Error::Store(Arc::new(durable_store::Error::Backend(join.to_string()))))?
        .map_err(|error| Error::Store(Arc::new(error)))?;
        Ok(Client::new(Arc::new(PostgresBackend {
            store: Arc::new(store),
        })))
    }
}
