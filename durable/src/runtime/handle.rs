//! How a [`Client`](crate::Client) reaches this runtime: [`RuntimeHandle`], the runtime's
//! side of the client's narrow [`Backend`], and [`Rejection`], the runtime's own answer
//! when it does not do what a command asked. Shards and the writer answer every command
//! with a [`Reply`]; this file is the one place that turns a rejection into the client's
//! public error.

use super::Shared;
use super::shard::ShardMsg;
use crate::client::{Backend, Command, EndWatch, Error};
use crate::registry::{Kind, Registry};
use durable_core::{BoxFuture, Limits};
use durable_store::Store;
use durable_types::{Failure, InstanceId, RuntimeStatus};
use std::sync::{Arc, Weak};
use tokio::sync::oneshot;

/// Why the runtime did not do what a command asked. The instance is the command's own.
#[derive(Clone, Debug)]
pub(crate) enum Rejection {
    /// A start for an id that has not ended.
    AlreadyExists { status: RuntimeStatus },
    /// No such instance.
    NotFound,
    /// The command needs a running instance, and this one has ended.
    NotRunning { status: RuntimeStatus },
    /// A purge of an instance that has not ended.
    NotEnded { status: RuntimeStatus },
    /// The instance's code cannot run here (its orchestrator is not registered, or its
    /// history does not replay); the failure says why.
    CannotRun(Failure),
    /// The command names an entity type this runtime does not have.
    EntityNotRegistered { name: String },
    /// A store read or write failed; for a write, the runtime has stopped taking work.
    Store(Arc<durable_store::Error>),
    /// An earlier write failed; the runtime takes no more work.
    Poisoned,
    /// This worker (of a schema shared by several) does not run the instance now: its
    /// partition moved, or a commit was fenced. Nothing of the command was done; it is
    /// sent again to whoever runs the instance.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Moved,
}

/// What the runtime answers to a command, once what it did is durable.
pub(crate) type Reply = Result<(), Rejection>;

/// Where a command's reply goes.
#[derive(Debug)]
pub(crate) enum ReplySender {
    /// A client of this process, waiting.
    Local(oneshot::Sender<Reply>),
    /// A request from another process, read from the `messages` table: the commit that
    /// answers it also consumes it and writes the answer, so it is done exactly once.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Remote(RemoteRequest),
}

/// Where a request from another process came from and where its answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct RemoteRequest {
    /// The `messages` row that carried it: `(partition, seq)`.
    pub(crate) partition: u16,
    pub(crate) seq: i64,
    /// The `replies` row its answer goes to.
    pub(crate) request: i64,
    /// The tenure of its partition when it was read (see `runtime/ownership.rs`): in a
    /// later one it may have been read again.
    pub(crate) tenure: u64,
}

impl ReplySender {
    /// Answers without a commit. A remote request stays in the `messages` table, answered
    /// by whoever runs its partition next: only a runtime that stops answers so.
    pub(crate) fn send(self, reply: Reply) {
        if let ReplySender::Local(sender) = self {
            let _ = sender.send(reply);
        }
    }
}

impl Rejection {
    /// The client's error for this rejection of a command for `instance`.
    pub(crate) fn into_error(self, instance: InstanceId) -> Error {
        match self {
            Rejection::AlreadyExists { status } => Error::AlreadyExists { instance, status },
            Rejection::NotFound => Error::NotFound { instance },
            Rejection::NotRunning { status } => Error::NotRunning { instance, status },
            Rejection::NotEnded { status } => Error::NotEnded { instance, status },
            Rejection::CannotRun(failure) => Error::Failed { instance, failure },
            Rejection::EntityNotRegistered { name } => Error::NotRegistered {
                kind: Kind::Entity,
                name,
            },
            Rejection::Store(error) => Error::Store(error),
            Rejection::Poisoned => Error::Poisoned,
            Rejection::Moved => Error::Store(Arc::new(durable_store::Error::Unavailable(format!(
                "`{instance}` kept moving between workers while the command was sent; try again"
            )))),
        }
    }
}

impl From<durable_store::Error> for Rejection {
    fn from(error: durable_store::Error) -> Self {
        Rejection::Store(Arc::new(error))
    }
}

/// The runtime, as a client sees it. It holds the runtime weakly: clients outlive a
/// runtime that shut down and then answer [`Error::ShuttingDown`].
pub(crate) struct RuntimeHandle {
    shared: Weak<Shared>,
    /// The runtime's registry and limits, which never change while it runs: kept here so
    /// that checking a command costs no trip to the runtime.
    registry: Arc<Registry>,
    limits: Limits,
}

impl RuntimeHandle {
    /// The handle of the runtime `shared` (of none, for a runtime that has stopped).
    pub(crate) fn new(shared: Option<&Arc<Shared>>) -> RuntimeHandle {
        match shared {
            Some(shared) => RuntimeHandle {
                shared: Arc::downgrade(shared),
                registry: Arc::clone(&shared.registry),
                limits: shared.config.limits,
            },
            None => RuntimeHandle {
                shared: Weak::new(),
                registry: Arc::new(Registry::new()),
                limits: Limits::default(),
            },
        }
    }

    /// The runtime, while it takes work.
    fn running(&self) -> Result<Arc<Shared>, Error> {
        let shared = self.shared.upgrade().ok_or(Error::ShuttingDown)?;
        if shared.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if shared.is_stopping() {
            return Err(Error::ShuttingDown);
        }
        Ok(shared)
    }
}

impl Backend for RuntimeHandle {
    fn submit(&self, command: Command) -> BoxFuture<'static, Result<(), Error>> {
        let target = command.target();
        #[cfg(feature = "postgres")]
        if let Ok(shared) = self.running()
            && shared.cluster.is_some()
        {
            return Box::pin(cluster_submit(Weak::clone(&self.shared), command));
        }
        // The mailbox only: a client waiting for its answer keeps no runtime alive.
        let mailbox = self.running().map(|shared| shared.mailbox(&target).clone());
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let reply = ReplySender::Local(reply);
            mailbox?.post(ShardMsg::Command { command, reply }).await;
            match answer.await {
                Ok(reply) => reply.map_err(|rejection| rejection.into_error(target)),
                // The shard stopped before answering: the runtime is shutting down.
                Err(_) => Err(Error::ShuttingDown),
            }
        })
    }

    fn store(&self) -> Result<Arc<dyn Store>, Error> {
        Ok(Arc::clone(&self.running()?.store))
    }

    fn watch(&self, instance: &InstanceId) -> Result<EndWatch, Error> {
        let shared = self.running()?;
        let notify = shared.watchers.watch(instance);
        let weak = Weak::clone(&self.shared);
        let instance = instance.clone();
        Ok(EndWatch::new(notify, move |notify| {
            if let Some(shared) = weak.upgrade() {
                shared.watchers.release(&instance, notify);
            }
        }))
    }

    fn registry(&self) -> Option<&Registry> {
        Some(&self.registry)
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn end_poll(&self, instance: &InstanceId) -> Option<std::time::Duration> {
        // Workers sharing a schema: the instance may end in another process (or move
        // there while the client waits, then only slowly looked at).
        #[cfg(feature = "postgres")]
        if let Some(shared) = self.shared.upgrade()
            && shared.cluster.is_some()
        {
            return Some(if shared.ownership.owns(instance) {
                std::time::Duration::from_secs(1)
            } else {
                super::cluster::remote::END_POLL
            });
        }
        let _ = instance;
        None
    }
}

/// A command of a client of a worker sharing a schema: run here when this worker runs the
/// instance, sent to the one that does otherwise; sent again while the instance moves.
#[cfg(feature = "postgres")]
async fn cluster_submit(shared: Weak<Shared>, command: Command) -> Result<(), Error> {
    use super::cluster::remote;
    let target = command.target();
    let mut command = Some(command);
    for attempt in 0..10u32 {
        let Some(next) = command.take() else {
            break;
        };
        let running = shared.upgrade().ok_or(Error::ShuttingDown)?;
        let outcome = if running.ownership.owns(&target) {
            let mailbox = running.mailbox(&target).clone();
            drop(running);
            let (reply, answer) = oneshot::channel();
            let kept = Some(next.clone());
            let reply = ReplySender::Local(reply);
            mailbox
                .post(ShardMsg::Command {
                    command: next,
                    reply,
                })
                .await;
            command = kept;
            answer.await.map_err(|_| Error::ShuttingDown)?
        } else {
            let store = running
                .cluster
                .as_ref()
                .map(|cluster| Arc::clone(&cluster.store));
            drop(running);
            let Some(store) = store else { break };
            command = Some(next.clone());
            remote::submit(&store, next).await?
        };
        match outcome {
            Err(Rejection::Moved) => {
                // Nothing was done: wait for the partition to settle, then send again.
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(5))).await;
            }
            outcome => return outcome.map_err(|rejection| rejection.into_error(target)),
        }
    }
    Err(Rejection::Moved.into_error(target))
}
