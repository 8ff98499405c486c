//! [`Backend`]: the one narrow handle through which a [`Client`](super::Client) reaches
//! whatever runs its instances. Today that is the runtime of this process (its shards
//! answer each [`Command`] once the command's effects are committed); a client of a
//! database that several processes share implements the same five methods over the
//! database. The client knows nothing else of the runtime, and the runtime depends on the
//! client, not the reverse.

use super::error::Error;
use super::reuse::IdReuse;
use crate::registry::Registry;
use durable_core::{BoxFuture, Limits};
use durable_store::Store;
use durable_types::{EntityId, InstanceId, Json, Timestamp};
use std::sync::Arc;
use tokio::sync::Notify;

/// A request that changes an instance or an entity. Its answer comes once what it did is
/// durable (for a start: with the instance's first turn).
#[derive(Clone, Debug)]
pub(crate) enum Command {
    /// Start a new execution of `name` (an absent or ended instance).
    Start {
        instance: InstanceId,
        name: String,
        input: Json,
        /// Not before this time.
        start_at: Option<Timestamp>,
        /// What to do with an instance that already has the id.
        reuse: IdReuse,
    },
    /// Deliver external event `name`.
    RaiseEvent {
        instance: InstanceId,
        name: String,
        input: Json,
    },
    Terminate {
        instance: InstanceId,
        reason: String,
    },
    Suspend {
        instance: InstanceId,
        reason: String,
    },
    Resume {
        instance: InstanceId,
        reason: String,
    },
    /// Delete an ended instance and its history.
    Purge { instance: InstanceId },
    /// Run `operation` on an entity, without waiting for its result.
    SignalEntity {
        entity: EntityId,
        operation: String,
        input: Json,
    },
    /// Delete an entity's state, in order with its operations.
    DeleteEntity { entity: EntityId },
}

impl Command {
    /// The instance the command is for (an entity's `@name@key`).
    pub(crate) fn target(&self) -> InstanceId {
        match self {
            Command::Start { instance, .. }
            | Command::RaiseEvent { instance, .. }
            | Command::Terminate { instance, .. }
            | Command::Suspend { instance, .. }
            | Command::Resume { instance, .. }
            | Command::Purge { instance } => instance.clone(),
            Command::SignalEntity { entity, .. } | Command::DeleteEntity { entity } => {
                entity.instance_id()
            }
        }
    }

    /// The JSON payload it carries, if it carries one.
    pub(crate) fn payload(&self) -> Option<&Json> {
        match self {
            Command::Start { input, .. }
            | Command::RaiseEvent { input, .. }
            | Command::SignalEntity { input, .. } => Some(input),
            _ => None,
        }
    }

    /// What to call its payload in an error: "input of orchestrator `x`".
    pub(crate) fn payload_name(&self) -> String {
        match self {
            Command::Start { name, .. } => format!("input of orchestrator `{name}`"),
            Command::RaiseEvent { name, .. } => format!("data of event `{name}`"),
            Command::SignalEntity { operation, .. } => {
                format!("input of entity operation `{operation}`")
            }
            _ => "payload".to_owned(),
        }
    }
}

/// What a [`Client`](super::Client) needs from whatever runs its instances. The methods
/// that reach it fail with [`Error::ShuttingDown`] or [`Error::Poisoned`] once it has
/// stopped taking work.
pub(crate) trait Backend: Send + Sync {
    /// Performs `command`; the future resolves once its effects are durable, or with why
    /// it was refused.
    fn submit(&self, command: Command) -> BoxFuture<'static, Result<(), Error>>;

    /// The store, for reads.
    fn store(&self) -> Result<Arc<dyn Store>, Error>;

    /// A registration for the end of `instance`.
    fn watch(&self, instance: &InstanceId) -> Result<EndWatch, Error>;

    /// The functions that can be started, by name, when this side knows them (`None`: the
    /// side that runs the instances checks names itself).
    fn registry(&self) -> Option<&Registry>;

    /// The limits commands are held to.
    fn limits(&self) -> Limits;

    /// How often a client waiting for an instance's end should look at its status, when
    /// the end may come from elsewhere than this backend's runtime (`None`: the watch
    /// always wakes).
    fn end_poll(&self, instance: &InstanceId) -> Option<std::time::Duration> {
        let _ = instance;
        None
    }
}

/// A registration for an instance's end: [`EndWatch::notified`] wakes when the instance
/// may have ended (check its status) or the backend stops. Released when dropped, also
/// when the waiting future is cancelled.
pub(crate) struct EndWatch {
    notify: Arc<Notify>,
    release: Option<Box<dyn FnOnce(Arc<Notify>) + Send + Sync>>,
}

impl EndWatch {
    /// A watch on `notify`, handed back to `release` when dropped.
    pub(crate) fn new(
        notify: Arc<Notify>,
        release: impl FnOnce(Arc<Notify>) + Send + Sync + 'static,
    ) -> EndWatch {
        EndWatch {
            notify,
            release: Some(Box::new(release)),
        }
    }

    /// What wakes when the instance may have ended.
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let notify = std::mem::replace(&mut self.notify, Arc::new(Notify::new()));
            release(notify);
        }
    }
}
