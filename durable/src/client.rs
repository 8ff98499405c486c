//! [`Client`]: start, query, wait for, terminate, list and purge orchestration instances.
//!
//! Requests that change an instance go through the instance's shard, which commits them
//! (with the turn they cause, for a start) before answering; queries read the store.

use crate::function::Orchestrator;
use crate::runtime::Shared;
use crate::runtime::shard::{Request, ShardMsg};
use durable_store::{
    EntityId, ExecutionId, Failure, FailureKind, HistoryEvent, InstanceId, InstanceQuery,
    InstanceRecord, InvalidInstanceId, Json, RuntimeStatus, Timestamp,
};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// A failed client operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No instance has this id.
    #[error("no orchestration instance `{instance}` exists")]
    NotFound {
        /// The id asked for.
        instance: InstanceId,
    },
    /// Starting an id that is still running.
    #[error(
        "instance `{instance}` already exists and is {status}; wait for it to end, terminate it, or start another id"
    )]
    AlreadyExists {
        /// The id.
        instance: InstanceId,
        /// Its status.
        status: RuntimeStatus,
    },
    /// The request needs a running instance, and this one has ended.
    #[error("instance `{instance}` has already ended ({status}); the request was discarded")]
    NotRunning {
        /// The id.
        instance: InstanceId,
        /// Its status.
        status: RuntimeStatus,
    },
    /// The request needs an ended instance (purge), and this one is still running.
    #[error(
        "instance `{instance}` is {status}; only ended instances can be purged: terminate it or wait for it to end"
    )]
    NotEnded {
        /// The id.
        instance: InstanceId,
        /// Its status.
        status: RuntimeStatus,
    },
    /// No orchestrator of this name is registered.
    #[error(
        "no orchestrator named `{name}` is registered with this runtime; add `.register({name})` to the runtime builder"
    )]
    NotRegistered {
        /// The name asked for.
        name: String,
    },
    /// The instance id is not valid.
    #[error(transparent)]
    InvalidInstanceId(#[from] InvalidInstanceId),
    /// The input is not JSON, or not the orchestrator's input type.
    #[error("invalid input for orchestrator `{name}`: {message}")]
    InvalidInput {
        /// The orchestrator.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The instance did not end in time.
    #[error("instance `{instance}` did not end within {timeout:?}")]
    Timeout {
        /// The id.
        instance: InstanceId,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The instance failed.
    #[error("instance `{instance}` failed: {failure}")]
    Failed {
        /// The id.
        instance: InstanceId,
        /// Why.
        failure: Failure,
    },
    /// The instance was terminated.
    #[error("instance `{instance}` was terminated: {reason}")]
    Terminated {
        /// The id.
        instance: InstanceId,
        /// The reason given.
        reason: String,
    },
    /// The output is not of the type the caller expects.
    #[error("the output of instance `{instance}` does not decode as the expected type: {message}")]
    OutputDecode {
        /// The id.
        instance: InstanceId,
        /// The decoder's message.
        message: String,
    },
    /// A continuation token that this runtime did not issue.
    #[error("invalid continuation token; pass back the token from the previous page")]
    InvalidContinuation,
    /// The store failed.
    #[error("store error: {0}")]
    Store(Arc<durable_store::Error>),
    /// The runtime is shutting down or has stopped.
    #[error("the runtime is shutting down or has stopped")]
    ShuttingDown,
    /// A store write failed earlier; the runtime accepts no more work.
    #[error("the runtime stopped accepting work after a store write failed; restart the process")]
    Poisoned,
    /// An instance id is longer than the runtime accepts
    /// ([`RuntimeBuilder::max_instance_id_len`](crate::RuntimeBuilder::max_instance_id_len)).
    #[error(
        "instance id `{id}` is {len} bytes long; this runtime accepts at most {limit} (max_instance_id_len)"
    )]
    InstanceIdTooLong {
        /// The id.
        id: String,
        /// Its length in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A payload is larger than the runtime accepts
    /// ([`RuntimeBuilder::max_payload_bytes`](crate::RuntimeBuilder::max_payload_bytes)).
    #[error(
        "the {what} is {bytes} bytes, above the limit of {limit} bytes (max_payload_bytes); keep large data elsewhere and pass a reference to it"
    )]
    PayloadTooLarge {
        /// What it was: "input of orchestrator `x`", "event `e`", ...
        what: String,
        /// Its size as JSON text.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl From<durable_store::Error> for Error {
    fn from(error: durable_store::Error) -> Self {
        Error::Store(Arc::new(error))
    }
}

/// The state of an instance, as [`Client::status`] reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InstanceStatus {
    /// The instance id.
    pub instance_id: InstanceId,
    /// Registered name of the orchestrator.
    pub name: String,
    /// The current execution.
    pub execution: ExecutionId,
    /// Lifecycle state.
    pub runtime_status: RuntimeStatus,
    /// The input of the current execution.
    pub input: Json,
    /// The output, once completed.
    pub output: Option<Json>,
    /// The failure, once failed or terminated.
    pub failure: Option<Failure>,
    /// The custom status the orchestrator set last.
    pub custom_status: Option<Json>,
    /// When the instance was created.
    pub created_at: SystemTime,
    /// When its state last changed.
    pub last_updated_at: SystemTime,
    /// The parent instance, for a sub-orchestration.
    pub parent: Option<InstanceId>,
    /// The history of the current execution, when asked for.
    pub history: Option<Vec<HistoryEvent>>,
}

impl InstanceStatus {
    fn from_record(record: InstanceRecord) -> InstanceStatus {
        InstanceStatus {
            instance_id: record.id,
            name: record.name,
            execution: record.execution,
            runtime_status: record.status,
            input: record.input,
            output: record.output,
            failure: record.failure,
            custom_status: record.custom_status,
            created_at: record.created_at.to_system_time(),
            last_updated_at: record.last_updated_at.to_system_time(),
            parent: record.parent.map(|parent| parent.instance),
            history: None,
        }
    }

    /// Decodes the output as `T` (`None` until the instance completed).
    ///
    /// # Errors
    /// When the output does not decode as `T`.
    pub fn output_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.output.as_ref().map(Json::decode).transpose()
    }

    /// Decodes the custom status as `T`.
    ///
    /// # Errors
    /// When the custom status does not decode as `T`.
    pub fn custom_status_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.custom_status.as_ref().map(Json::decode).transpose()
    }

    /// Whether the instance has ended.
    pub fn is_ended(&self) -> bool {
        self.runtime_status.is_terminal()
    }
}

/// An entity, as [`Client::list_entities`] reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EntityStatus {
    /// The entity.
    pub id: EntityId,
    /// Its state as JSON (`None`: no state).
    pub state: Option<Json>,
    /// The orchestration that holds its lock, if any.
    pub locked_by: Option<InstanceId>,
    /// When it last changed.
    pub last_modified: SystemTime,
}

impl EntityStatus {
    fn from_record(record: durable_store::EntityRecord) -> EntityStatus {
        EntityStatus {
            id: record.id,
            state: record.state,
            locked_by: record.lock.map(|lock| lock.instance),
            last_modified: record.last_modified.to_system_time(),
        }
    }
}

/// One page of [`Client::list_entities`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EntityPage {
    /// The entities, in id order.
    pub entities: Vec<EntityStatus>,
    /// Pass this to [`Client::list_entities`] for the next page; `None` on the last page.
    pub continuation: Option<String>,
}

/// One page of [`Client::list`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InstancePage {
    /// The instances, in id order.
    pub instances: Vec<InstanceStatus>,
    /// Pass this to [`Client::list`] for the next page; `None` on the last page.
    pub continuation: Option<String>,
}

/// A handle on a started instance, typed by the orchestrator's output.
#[derive(Clone, Debug)]
pub struct InstanceHandle<O> {
    client: Client,
    id: InstanceId,
    output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> InstanceHandle<O> {
    /// The instance id.
    pub fn id(&self) -> &InstanceId {
        &self.id
    }

    /// Waits up to `timeout` for the instance to end and returns its typed output.
    ///
    /// # Errors
    /// [`Error::Failed`] or [`Error::Terminated`] when it did not complete,
    /// [`Error::Timeout`] when it did not end in time, and the errors of
    /// [`Client::wait_for_completion`].
    pub async fn wait(&self, timeout: Duration) -> Result<O, Error> {
        let status = self.client.wait_for_completion(&self.id, timeout).await?;
        typed_output(status)
    }

    /// The instance's current status.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub async fn status(&self) -> Result<InstanceStatus, Error> {
        self.client
            .status(&self.id)
            .await?
            .ok_or_else(|| Error::NotFound {
                instance: self.id.clone(),
            })
    }
}

fn typed_output<O: DeserializeOwned>(status: InstanceStatus) -> Result<O, Error> {
    let instance = status.instance_id.clone();
    match status.runtime_status {
        RuntimeStatus::Completed => {
            let output = status.output.unwrap_or_else(Json::null);
            output.decode().map_err(|error| Error::OutputDecode {
                instance,
                message: error.to_string(),
            })
        }
        RuntimeStatus::Terminated => Err(Error::Terminated {
            instance,
            reason: status.failure.map(|f| f.message).unwrap_or_default(),
        }),
        _ => Err(Error::Failed {
            instance,
            failure: status
                .failure
                .unwrap_or_else(|| Failure::new(FailureKind::Internal, "failed without a reason")),
        }),
    }
}

/// Starts and manages orchestration instances. Get one from
/// [`Runtime::client`](crate::Runtime::client); clone it freely.
///
/// ```
/// use durable::prelude::*;
/// use durable::InstanceQuery;
/// use std::time::Duration;
///
/// #[orchestrator]
/// async fn nap(ctx: OrchestrationContext, seconds: u64) -> Result<(), Error> {
///     ctx.sleep(Duration::from_secs(seconds)).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::builder().in_memory().register(nap).start().await?;
/// let client = runtime.client();
/// client.start_with_id(nap, "nap-1", 3600).await?;
/// let status = client.status("nap-1").await?.expect("it exists");
/// assert_eq!(status.runtime_status, RuntimeStatus::Running);
///
/// client.terminate("nap-1", "wake up").await?;
/// let status = client.wait_for_completion("nap-1", Duration::from_secs(5)).await?;
/// assert_eq!(status.runtime_status, RuntimeStatus::Terminated);
///
/// let page = client.list(&InstanceQuery::default(), 100, None).await?;
/// assert_eq!(page.instances.len(), 1);
/// client.purge("nap-1").await?;
/// runtime.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Weak<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(shared: Weak<Shared>) -> Client {
        Client { shared }
    }

    fn shared(&self) -> Result<Arc<Shared>, Error> {
        let shared = self.shared.upgrade().ok_or(Error::ShuttingDown)?;
        if shared.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if shared.is_stopping() {
            return Err(Error::ShuttingDown);
        }
        Ok(shared)
    }

    /// Starts orchestrator `O` with `input` under a new instance id.
    ///
    /// Returns once the start is durable (the instance's first turn committed with it).
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if `O` is not registered, and store errors.
    pub async fn start<O: Orchestrator>(
        &self,
        orchestrator: O,
        input: O::Input,
    ) -> Result<InstanceHandle<O::Output>, Error> {
        let id = InstanceId::new(uuid::Uuid::new_v4().simple().to_string())?;
        self.start_typed(orchestrator, id, input).await
    }

    /// Starts orchestrator `O` with `input` under instance id `instance_id`. An id that has
    /// ended starts a new execution; an id that is still running is
    /// [`Error::AlreadyExists`].
    ///
    /// # Errors
    /// [`Error::InvalidInstanceId`], [`Error::AlreadyExists`], [`Error::NotRegistered`],
    /// store errors.
    pub async fn start_with_id<O: Orchestrator>(
        &self,
        orchestrator: O,
        instance_id: impl AsRef<str>,
        input: O::Input,
    ) -> Result<InstanceHandle<O::Output>, Error> {
        let id = InstanceId::new(instance_id)?;
        self.start_typed(orchestrator, id, input).await
    }

    /// Starts orchestrator `O` with `input` under a new instance id, not before `when`: the
    /// instance is `Pending` until then (a durable timer starts it, across restarts).
    ///
    /// # Errors
    /// As [`Client::start`].
    pub async fn start_at<O: Orchestrator>(
        &self,
        orchestrator: O,
        input: O::Input,
        when: SystemTime,
    ) -> Result<InstanceHandle<O::Output>, Error> {
        let options = StartOptions::new().at(when);
        self.start_with(orchestrator, input, options).await
    }

    /// Starts orchestrator `O` with `input` and [`StartOptions`]: an instance id, a scheduled
    /// start.
    ///
    /// # Errors
    /// As [`Client::start_with_id`].
    pub async fn start_with<O: Orchestrator>(
        &self,
        orchestrator: O,
        input: O::Input,
        options: StartOptions,
    ) -> Result<InstanceHandle<O::Output>, Error> {
        let id = match options.instance_id {
            Some(id) => InstanceId::new(id)?,
            None => InstanceId::new(uuid::Uuid::new_v4().simple().to_string())?,
        };
        let _ = orchestrator;
        let input = encode_input::<O>(&input)?;
        let start_at = options.start_at.map(Timestamp::from_system_time);
        self.start_instance(O::NAME, id.clone(), input, start_at)
            .await?;
        Ok(InstanceHandle {
            client: self.clone(),
            id,
            output: PhantomData,
        })
    }

    async fn start_typed<O: Orchestrator>(
        &self,
        _orchestrator: O,
        id: InstanceId,
        input: O::Input,
    ) -> Result<InstanceHandle<O::Output>, Error> {
        let input = encode_input::<O>(&input)?;
        self.start_instance(O::NAME, id.clone(), input, None)
            .await?;
        Ok(InstanceHandle {
            client: self.clone(),
            id,
            output: PhantomData,
        })
    }

    /// Starts an orchestrator by name with a JSON input: the untyped form, for HTTP
    /// handlers and tools. `instance_id` `None` generates one.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] for an unknown name, [`Error::InvalidInput`] for input that
    /// is not JSON or not the orchestrator's input type, and the errors of
    /// [`Client::start_with_id`].
    pub async fn start_by_name(
        &self,
        name: &str,
        instance_id: Option<&str>,
        input: &str,
    ) -> Result<InstanceId, Error> {
        let shared = self.shared()?;
        let entry = shared
            .registry
            .orchestrator(name)
            .ok_or_else(|| Error::NotRegistered {
                name: name.to_owned(),
            })?;
        let limit = shared.config.limits.max_payload_bytes;
        if input.len() > limit {
            return Err(Error::PayloadTooLarge {
                what: format!("input of orchestrator `{name}`"),
                bytes: input.len(),
                limit,
            });
        }
        let input = Json::parse(input).map_err(|error| Error::InvalidInput {
            name: name.to_owned(),
            message: format!("not valid JSON: {error}"),
        })?;
        (entry.check_input)(&input).map_err(|message| Error::InvalidInput {
            name: name.to_owned(),
            message,
        })?;
        let id = match instance_id {
            Some(id) => InstanceId::new(id)?,
            None => InstanceId::new(uuid::Uuid::new_v4().simple().to_string())?,
        };
        drop(shared);
        self.start_instance(name, id.clone(), input, None).await?;
        Ok(id)
    }

    async fn start_instance(
        &self,
        name: &str,
        instance: InstanceId,
        input: Json,
        start_at: Option<Timestamp>,
    ) -> Result<(), Error> {
        {
            let shared = self.shared()?;
            if !shared.registry.has_orchestrator(name) {
                return Err(Error::NotRegistered {
                    name: name.to_owned(),
                });
            }
        }
        let request = Request::Start {
            instance: instance.clone(),
            name: name.to_owned(),
            input,
            start_at,
        };
        self.request(&instance, request).await
    }

    /// Sends external event `name` with `payload` to an instance; its orchestrator receives
    /// it with `ctx.wait_for_event(name)`. Returns once the event is stored. Events that
    /// arrive before the orchestrator waits for them are kept, in arrival order.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown instance; [`Error::NotRunning`] for an ended one —
    /// the event is then discarded.
    pub async fn raise_event(
        &self,
        instance_id: impl AsRef<str>,
        name: impl Into<String>,
        payload: impl serde::Serialize,
    ) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let name = name.into();
        let input = Json::encode(&payload).map_err(|error| Error::InvalidInput {
            name: format!("event `{name}`"),
            message: error.to_string(),
        })?;
        let request = Request::RaiseEvent {
            instance: instance.clone(),
            name,
            input,
        };
        self.request(&instance, request).await
    }

    /// Suspends a running instance: it keeps receiving and storing events, activity results
    /// and timer firings, but runs no turn until resumed. Its status reads `Suspended`.
    /// Suspending a suspended instance does nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotRunning`] for an ended instance.
    pub async fn suspend(
        &self,
        instance_id: impl AsRef<str>,
        reason: impl Into<String>,
    ) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let request = Request::Suspend {
            instance: instance.clone(),
            reason: reason.into(),
        };
        self.request(&instance, request).await
    }

    /// Resumes a suspended instance: what arrived meanwhile is processed, in order.
    /// Resuming an instance that is not suspended does nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotRunning`] for an ended instance.
    pub async fn resume(
        &self,
        instance_id: impl AsRef<str>,
        reason: impl Into<String>,
    ) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let request = Request::Resume {
            instance: instance.clone(),
            reason: reason.into(),
        };
        self.request(&instance, request).await
    }

    /// Terminates a running instance: it ends as `Terminated` with `reason`, and its
    /// pending timers and activities are cancelled.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotRunning`] for an ended instance, store errors.
    pub async fn terminate(
        &self,
        instance_id: impl AsRef<str>,
        reason: impl Into<String>,
    ) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let request = Request::Terminate {
            instance: instance.clone(),
            reason: reason.into(),
        };
        self.request(&instance, request).await
    }

    /// Starts an instance's orchestrator again with the input of its current execution:
    /// under a new generated id when `new_instance_id`, else under the same id (which must
    /// have ended). Returns the id that runs.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::AlreadyExists`] when reusing the id of an instance
    /// that is still running; [`Error::NotRegistered`] when its orchestrator is no longer
    /// registered; store errors.
    pub async fn restart(
        &self,
        instance_id: impl AsRef<str>,
        new_instance_id: bool,
    ) -> Result<InstanceId, Error> {
        let instance = InstanceId::new(instance_id)?;
        let status = self
            .status(&instance)
            .await?
            .ok_or_else(|| Error::NotFound {
                instance: instance.clone(),
            })?;
        let id = if new_instance_id {
            InstanceId::new(uuid::Uuid::new_v4().simple().to_string())?
        } else {
            instance
        };
        self.start_instance(&status.name, id.clone(), status.input, None)
            .await?;
        Ok(id)
    }

    /// Deletes an ended instance and its history.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotEnded`] for a running instance, store errors.
    pub async fn purge(&self, instance_id: impl AsRef<str>) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let request = Request::Purge {
            instance: instance.clone(),
        };
        self.request(&instance, request).await
    }

    /// Deletes every ended instance that matches `query` (running ones are skipped) and
    /// returns how many were deleted.
    ///
    /// # Errors
    /// Store errors.
    pub async fn purge_where(&self, query: &InstanceQuery) -> Result<u64, Error> {
        let mut query = query.clone();
        let ended = [
            RuntimeStatus::Completed,
            RuntimeStatus::Failed,
            RuntimeStatus::Terminated,
        ];
        query.statuses = Some(match query.statuses.take() {
            Some(statuses) => statuses.into_iter().filter(|s| ended.contains(s)).collect(),
            None => ended.to_vec(),
        });
        let mut purged = 0;
        let mut after: Option<InstanceId> = None;
        loop {
            let page = self.list_records(&query, after.clone(), 500).await?;
            let Some(last) = page.last() else {
                return Ok(purged);
            };
            after = Some(last.id.clone());
            for record in page {
                match self.purge(&record.id).await {
                    Ok(()) => purged += 1,
                    // Purged or restarted meanwhile: not ours to delete any more.
                    Err(Error::NotFound { .. } | Error::NotEnded { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }

    /// The status of an instance, or `None` if it does not exist.
    ///
    /// # Errors
    /// [`Error::InvalidInstanceId`], store errors.
    pub async fn status(
        &self,
        instance_id: impl AsRef<str>,
    ) -> Result<Option<InstanceStatus>, Error> {
        let instance = InstanceId::new(instance_id)?;
        let record = self.read(move |store| store.instance(&instance)).await?;
        Ok(record.map(InstanceStatus::from_record))
    }

    /// The status of an instance with the history of its current execution.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub async fn status_with_history(
        &self,
        instance_id: impl AsRef<str>,
    ) -> Result<Option<InstanceStatus>, Error> {
        let instance = InstanceId::new(instance_id)?;
        let found = self
            .read(move |store| {
                let Some(record) = store.instance(&instance)? else {
                    return Ok(None);
                };
                let history = store.history(&instance, record.execution)?;
                Ok(Some((record, history)))
            })
            .await?;
        Ok(found.map(|(record, history)| {
            let mut status = InstanceStatus::from_record(record);
            status.history = Some(history);
            status
        }))
    }

    /// Waits up to `timeout` for an instance to end and returns its final status (which
    /// may be `Failed` or `Terminated`: that is not an error here).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Timeout`], store errors.
    pub async fn wait_for_completion(
        &self,
        instance_id: impl AsRef<str>,
        timeout: Duration,
    ) -> Result<InstanceStatus, Error> {
        let instance = InstanceId::new(instance_id)?;
        // `None`: a timeout too long to represent, which means no deadline.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let watch = WatchGuard::new(&self.shared, &*self.shared()?, &instance);
            let outcome = {
                let ended = watch.notify.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                match self.status(&instance).await {
                    Err(error) => Some(Err(error)),
                    Ok(None) => Some(Err(Error::NotFound {
                        instance: instance.clone(),
                    })),
                    Ok(Some(status)) if status.is_ended() => Some(Ok(status)),
                    Ok(Some(_)) => match deadline {
                        Some(deadline) => match tokio::time::timeout_at(deadline, ended).await {
                            Ok(()) => None,
                            Err(_) => Some(Err(Error::Timeout {
                                instance: instance.clone(),
                                timeout,
                            })),
                        },
                        None => {
                            ended.await;
                            None
                        }
                    },
                }
            };
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// One page of instances matching `query`, in id order: at most `page_size`, starting
    /// after the page that returned `continuation`.
    ///
    /// # Errors
    /// [`Error::InvalidContinuation`], store errors.
    pub async fn list(
        &self,
        query: &InstanceQuery,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<InstancePage, Error> {
        let after = continuation.map(decode_continuation).transpose()?;
        let page_size = page_size.max(1);
        // One more than asked says whether another page exists: no token on the last one.
        let mut records = self
            .list_records(query, after, page_size.saturating_add(1))
            .await?;
        let more = records.len() > page_size;
        records.truncate(page_size);
        let continuation = match records.last() {
            Some(last) if more => Some(encode_continuation(&last.id)),
            _ => None,
        };
        Ok(InstancePage {
            instances: records
                .into_iter()
                .map(InstanceStatus::from_record)
                .collect(),
            continuation,
        })
    }

    async fn list_records(
        &self,
        query: &InstanceQuery,
        after: Option<InstanceId>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, Error> {
        let query = query.clone();
        self.read(move |store| store.list_instances(&query, after.as_ref(), limit))
            .await
    }

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
    pub fn entity<E: crate::Entity>(&self, key: impl AsRef<str>) -> crate::entity::ClientEntity<E> {
        crate::entity::ClientEntity::new(self.clone(), key.as_ref())
    }

    /// The state of entity `E` with `key`, or `None` if it has none (never signalled, or
    /// deleted). A client signal that returned has been applied, unless the entity was
    /// locked or had a backlog beyond `max_entity_queue`: then it is stored and applied
    /// in order soon after.
    ///
    /// # Errors
    /// [`Error::InvalidInstanceId`] for an invalid key, [`Error::OutputDecode`] if the stored
    /// state does not decode as `E`, store errors.
    pub async fn entity_state<E: crate::Entity>(
        &self,
        key: impl AsRef<str>,
    ) -> Result<Option<E>, Error> {
        let id = EntityId::new(E::NAME, key.as_ref())?;
        self.entity_state_of(&id).await
    }

    pub(crate) async fn entity_state_of<E: crate::Entity>(
        &self,
        id: &EntityId,
    ) -> Result<Option<E>, Error> {
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
    /// # Errors
    /// [`Error::NotRegistered`] for an unknown entity type, store errors.
    pub async fn signal_entity(
        &self,
        entity: &EntityId,
        operation: &str,
        input: Json,
    ) -> Result<(), Error> {
        {
            let shared = self.shared()?;
            if !shared.registry.has_entity(entity.name()) {
                return Err(Error::NotRegistered {
                    name: entity.name().to_owned(),
                });
            }
        }
        let request = Request::SignalEntity {
            entity: entity.clone(),
            operation: operation.to_owned(),
            input,
        };
        self.request(&entity.instance_id(), request).await
    }

    /// Deletes an entity's state (its next operation starts from `Default`). The deletion
    /// runs in order with the entity's operations: after those already sent.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] for an unknown entity type, store errors.
    pub async fn delete_entity(&self, entity: &EntityId) -> Result<(), Error> {
        let request = Request::DeleteEntity {
            entity: entity.clone(),
        };
        self.request(&entity.instance_id(), request).await
    }

    /// An entity's stored record: its state, lock and last change; `None` if it has none.
    ///
    /// # Errors
    /// Store errors.
    pub async fn entity_status(&self, entity: &EntityId) -> Result<Option<EntityStatus>, Error> {
        let lookup = entity.clone();
        let record = self.read(move |store| store.entity(&lookup)).await?;
        Ok(record.map(EntityStatus::from_record))
    }

    /// One page of entities, of type `name` or of every type, in id order.
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
        let name = name.map(str::to_owned);
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

    /// Sends a request to the instance's shard and waits for the answer, which comes once
    /// the request's effects are durable.
    async fn request(&self, instance: &InstanceId, request: Request) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        {
            let shared = self.shared()?;
            let limits = shared.config.limits;
            if let Request::Start { instance, .. } = &request
                && instance.as_str().len() > limits.max_instance_id_len
            {
                return Err(Error::InstanceIdTooLong {
                    id: instance.to_string(),
                    len: instance.as_str().len(),
                    limit: limits.max_instance_id_len,
                });
            }
            let limit = limits.max_payload_bytes;
            let payload = match &request {
                Request::Start { name, input, .. } => {
                    Some((input, format!("input of orchestrator `{name}`")))
                }
                Request::RaiseEvent { name, input, .. } => {
                    Some((input, format!("data of event `{name}`")))
                }
                Request::SignalEntity {
                    operation, input, ..
                } => Some((input, format!("input of entity operation `{operation}`"))),
                _ => None,
            };
            if let Some((input, what)) = payload
                && input.as_str().len() > limit
            {
                return Err(Error::PayloadTooLarge {
                    what,
                    bytes: input.as_str().len(),
                    limit,
                });
            }
            let shard = shared.shard_of(instance);
            shared.send_to_shard(shard, ShardMsg::Request { request, reply });
        }
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Runs a store read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn durable_store::Store) -> Result<T, durable_store::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = Arc::clone(&self.shared()?.store);
        tokio::task::spawn_blocking(move || read(&*store))
            .await
            .map_err(|_| Error::ShuttingDown)?
            .map_err(Error::from)
    }
}

/// A registration for an instance's end, released when dropped — also when the waiting
/// future is cancelled.
struct WatchGuard {
    shared: Weak<Shared>,
    instance: InstanceId,
    notify: Arc<tokio::sync::Notify>,
}

impl WatchGuard {
    fn new(weak: &Weak<Shared>, shared: &Shared, instance: &InstanceId) -> WatchGuard {
        WatchGuard {
            shared: weak.clone(),
            instance: instance.clone(),
            notify: shared.watchers.watch(instance),
        }
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let notify = std::mem::replace(&mut self.notify, Arc::new(tokio::sync::Notify::new()));
            shared.watchers.release(&self.instance, notify);
        }
    }
}

fn encode_input<O: Orchestrator>(input: &O::Input) -> Result<Json, Error> {
    Json::encode(input).map_err(|error| Error::InvalidInput {
        name: O::NAME.to_owned(),
        message: error.to_string(),
    })
}

/// Options of [`Client::start_with`].
///
/// ```
/// use durable::client::StartOptions;
/// use std::time::{Duration, SystemTime};
/// let options = StartOptions::new()
///     .instance_id("nightly-report")
///     .at(SystemTime::now() + Duration::from_secs(3600));
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StartOptions {
    /// The instance id; a new one is generated when `None`.
    pub instance_id: Option<String>,
    /// Start not before this time; at once when `None` or past.
    pub start_at: Option<SystemTime>,
}

impl StartOptions {
    /// No options: a generated id, started at once.
    pub fn new() -> StartOptions {
        StartOptions::default()
    }

    /// Uses `id` as the instance id.
    #[must_use]
    pub fn instance_id(mut self, id: impl Into<String>) -> StartOptions {
        self.instance_id = Some(id.into());
        self
    }

    /// Starts the instance not before `when`.
    #[must_use]
    pub fn at(mut self, when: SystemTime) -> StartOptions {
        self.start_at = Some(when);
        self
    }
}

fn encode_continuation(id: &InstanceId) -> String {
    encode_hex(id.as_str())
}

fn encode_hex(text: &str) -> String {
    text.bytes().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let decoded: Option<Vec<u8>> = bytes
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect();
    String::from_utf8(decoded?).ok()
}

fn decode_continuation(token: &str) -> Result<InstanceId, Error> {
    let text = decode_hex(token).ok_or(Error::InvalidContinuation)?;
    InstanceId::new(text).map_err(|_| Error::InvalidContinuation)
}

fn decode_entity_continuation(token: &str) -> Result<EntityId, Error> {
    let text = decode_hex(token).ok_or(Error::InvalidContinuation)?;
    let (name, key) = text
        .strip_prefix('@')
        .and_then(|rest| rest.split_once('@'))
        .ok_or(Error::InvalidContinuation)?;
    EntityId::new(name, key).map_err(|_| Error::InvalidContinuation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_roundtrip_and_reject_garbage() {
        let id = InstanceId::new("order:42-é").unwrap();
        assert_eq!(decode_continuation(&encode_continuation(&id)).unwrap(), id);
        for bad in ["zz", "abc", "", "2f"] {
            assert!(decode_continuation(bad).is_err(), "{bad}");
        }
    }
}
