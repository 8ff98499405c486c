//! [`Client`] and what it does to orchestration instances: start, query, wait for,
//! terminate, list and purge. Its entity operations are in `entity.rs`; both send through
//! `Client::submit`, which checks a command before it goes to the backend.

use super::backend::{Backend, Command};
use super::error::Error;
use super::reuse::IdReuse;
use super::status::{InstancePage, InstanceStatus};
use crate::registry::{Kind, Registry};
use durable_core::{EventName, Orchestrator};
use durable_store::Store;
use durable_types::{
    EntityId, Failure, FailureKind, InstanceId, InstanceQuery, InstanceRecord, Json, RuntimeStatus,
    Timestamp,
};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// ```
    /// use durable::client::Error as ClientError;
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn divide(_ctx: OrchestrationContext, (a, b): (u64, u64)) -> Result<u64, Error> {
    ///     a.checked_div(b).ok_or_else(|| Error::msg("division by zero"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(divide).start().await?;
    /// let client = runtime.client();
    /// let quotient: u64 = client.start(divide, (7, 2)).await?.wait(Duration::from_secs(10)).await?;
    /// assert_eq!(quotient, 3);
    ///
    /// // A failed instance is an error here, with the orchestrator's own.
    /// let failed = client.start(divide, (7, 0)).await?.wait(Duration::from_secs(10)).await;
    /// match failed {
    ///     Err(ClientError::Failed { failure, .. }) => assert_eq!(failure.message, "division by zero"),
    ///     other => panic!("expected a failure, got {other:?}"),
    /// }
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `backend`.
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Client {
        Client { backend }
    }

    /// The orchestrator and entity type names this client's runtime registers, when it
    /// knows them (a client of a shared database does not).
    #[cfg(feature = "http")]
    pub(crate) fn registered_names(&self) -> Option<(Vec<&'static str>, Vec<&'static str>)> {
        let registry = self.backend.registry()?;
        Some((registry.orchestrator_names(), registry.entity_names()))
    }

    /// The largest JSON payload this client's runtime takes, in bytes.
    #[cfg(feature = "http")]
    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.backend.limits().max_payload_bytes
    }

    /// Starts orchestrator `O` with `input` under a new instance id.
    ///
    /// Returns once the start is durable (the instance's first turn committed with it).
    ///
    /// ```
    /// use durable::client::Error as ClientError;
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn greet(_ctx: OrchestrationContext, name: String) -> Result<String, Error> {
    ///     Ok(format!("hello, {name}"))
    /// }
    ///
    /// #[orchestrator]
    /// async fn forgotten(_ctx: OrchestrationContext) -> Result<(), Error> {
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(greet).start().await?;
    /// let client = runtime.client();
    /// // Typed: the input must be a `String`, the output is one.
    /// let instance = client.start(greet, "Ada".to_owned()).await?;
    /// println!("started {}", instance.id()); // a generated id
    /// assert_eq!(instance.wait(Duration::from_secs(10)).await?, "hello, Ada");
    ///
    /// let unknown = client.start(forgotten, ()).await;
    /// assert!(matches!(unknown, Err(ClientError::NotRegistered { .. })));
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if `O` is not registered, and store errors.
    pub async fn start<O: Orchestrator>(
        &self,
        orchestrator: O,
        input: O::Input,
    ) -> Result<InstanceHandle<O::Output>, Error> {
        self.start_with(orchestrator, input, StartOptions::new())
            .await
    }

    /// Starts orchestrator `O` with `input` under instance id `instance_id`. An id that has
    /// ended starts a new execution, which replaces the ended one (its history and output
    /// are gone); an id that is still running is [`Error::AlreadyExists`]. That is Durable
    /// Functions' behaviour; for a start that must never replace anything, or one that
    /// terminates a running instance, use [`Client::start_with`] with
    /// [`StartOptions::reuse`].
    ///
    /// ```
    /// use durable::client::Error as ClientError;
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn import(ctx: OrchestrationContext, file: String) -> Result<String, Error> {
    ///     ctx.wait_for_event::<()>("upload finished").await?;
    ///     Ok(format!("imported {file}"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(import).start().await?;
    /// let client = runtime.client();
    /// let first = client.start_with_id(import, "import-7", "a.csv".into()).await?;
    /// // Running: a second start of the id is refused.
    /// let again = client.start_with_id(import, "import-7", "b.csv".into()).await;
    /// assert!(matches!(again, Err(ClientError::AlreadyExists { .. })));
    ///
    /// client.raise_event("import-7", "upload finished", ()).await?;
    /// assert_eq!(first.wait(Duration::from_secs(10)).await?, "imported a.csv");
    /// // Ended: a start of the id runs again, and replaces the ended execution.
    /// let second = client.start_with_id(import, "import-7", "b.csv".into()).await?;
    /// client.raise_event("import-7", "upload finished", ()).await?;
    /// assert_eq!(second.wait(Duration::from_secs(10)).await?, "imported b.csv");
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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
        let options = StartOptions::new().instance_id(instance_id.as_ref());
        self.start_with(orchestrator, input, options).await
    }

    /// Starts orchestrator `O` with `input` under a new instance id, not before `when`: the
    /// instance is `Pending` until then (a durable timer starts it, across restarts).
    ///
    /// ```
    /// use durable::Clock;
    /// use durable::prelude::*;
    /// use std::time::{Duration, SystemTime};
    ///
    /// #[orchestrator]
    /// async fn report(_ctx: OrchestrationContext, name: String) -> Result<String, Error> {
    ///     Ok(format!("{name} report"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A clock this example moves by hand; a real runtime uses the system clock.
    /// let clock = Clock::manual(SystemTime::now());
    /// let runtime = Runtime::builder()
    ///     .in_memory()
    ///     .clock(clock.clone())
    ///     .register(report)
    ///     .start()
    ///     .await?;
    /// let client = runtime.client();
    /// let tomorrow = clock.now() + Duration::from_secs(24 * 3600);
    /// let instance = client.start_at(report, "daily".to_owned(), tomorrow).await?;
    /// assert_eq!(instance.status().await?.runtime_status, RuntimeStatus::Pending);
    ///
    /// clock.advance(Duration::from_secs(24 * 3600)); // a day passes
    /// assert_eq!(instance.wait(Duration::from_secs(10)).await?, "daily report");
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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
    /// start, what to do when the id exists ([`IdReuse`]).
    ///
    /// ```
    /// use durable::client::{IdReuse, StartOptions};
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn send_invoice(_ctx: OrchestrationContext, cents: u64) -> Result<String, Error> {
    ///     Ok(format!("invoiced {cents} cents"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(send_invoice).start().await?;
    /// let client = runtime.client();
    /// // One invoice per customer and month, never two, however often this runs.
    /// let options = StartOptions::new()
    ///     .instance_id("invoice-c42-2026-06")
    ///     .reuse(IdReuse::Never);
    /// let invoice = client.start_with(send_invoice, 1999, options).await?;
    /// assert_eq!(invoice.id().as_str(), "invoice-c42-2026-06");
    /// assert_eq!(invoice.wait(Duration::from_secs(10)).await?, "invoiced 1999 cents");
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::start_with_id`].
    pub async fn start_with<O: Orchestrator>(
        &self,
        orchestrator: O,
        input: O::Input,
        options: StartOptions,
    ) -> Result<InstanceHandle<O::Output>, Error> {
        let _ = orchestrator;
        let id = match options.instance_id {
            Some(id) => InstanceId::new(id)?,
            None => new_instance_id(),
        };
        let input = Json::encode(&input).map_err(|error| Error::InvalidInput {
            name: O::NAME.to_owned(),
            message: error.to_string(),
        })?;
        self.submit(Command::Start {
            instance: id.clone(),
            name: O::NAME.to_owned(),
            input,
            start_at: options.start_at.map(Timestamp::from_system_time),
            reuse: options.reuse,
        })
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
        let check_input = match self.backend.registry() {
            Some(registry) => Some(registry.orchestrator_input_check(name).ok_or_else(|| {
                Error::NotRegistered {
                    kind: Kind::Orchestrator,
                    name: name.to_owned(),
                }
            })?),
            None => None,
        };
        // Measured before it is parsed: a huge body is refused without reading it all.
        self.backend
            .limits()
            .check_payload(input.len(), || format!("input of orchestrator `{name}`"))?;
        let input = Json::parse(input).map_err(|error| Error::InvalidInput {
            name: name.to_owned(),
            message: format!("not valid JSON: {error}"),
        })?;
        let input = once_encoded(input, check_input);
        if let Some(check_input) = check_input {
            check_input(&input).map_err(|message| Error::InvalidInput {
                name: name.to_owned(),
                message,
            })?;
        }
        let id = match instance_id {
            Some(id) => InstanceId::new(id)?,
            None => new_instance_id(),
        };
        self.submit(Command::Start {
            instance: id.clone(),
            name: name.to_owned(),
            input,
            start_at: None,
            reuse: IdReuse::IfEnded,
        })
        .await?;
        Ok(id)
    }

    /// Sends external event `name` with `payload` to an instance; its orchestrator receives
    /// it with `ctx.wait_for_event(name)`. Returns once the event is stored. Events that
    /// arrive before the orchestrator waits for them are kept, in arrival order.
    ///
    /// `name` is an [`ExternalEvent`](durable_core::ExternalEvent) — then `payload` must be
    /// of its declared type — or a string.
    ///
    /// ```
    /// use durable::client::Error as ClientError;
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// /// Declared once, used by both sides: `true` approves.
    /// const APPROVAL: ExternalEvent<bool> = ExternalEvent::new("Approval");
    ///
    /// #[orchestrator]
    /// async fn approval(ctx: OrchestrationContext) -> Result<bool, Error> {
    ///     ctx.wait_for_event(APPROVAL).await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(approval).start().await?;
    /// let client = runtime.client();
    /// let request = client.start_with_id(approval, "expense-17", ()).await?;
    /// client.raise_event("expense-17", APPROVAL, true).await?;
    /// assert!(request.wait(Duration::from_secs(10)).await?);
    ///
    /// // Too late: the instance has ended, and the event is discarded. (A string names
    /// // the event as other programs do; the payload's type is then the caller's choice.)
    /// let late = client.raise_event("expense-17", "Approval", false).await;
    /// assert!(matches!(late, Err(ClientError::NotRunning { .. })));
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown instance; [`Error::NotRunning`] for an ended one —
    /// the event is then discarded.
    pub async fn raise_event<T: serde::Serialize>(
        &self,
        instance_id: impl AsRef<str>,
        name: impl EventName<T>,
        payload: T,
    ) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let name = name.event_name().to_owned();
        let len = name.chars().count();
        if len > EVENT_NAME_MAX_LEN {
            return Err(Error::TooLong {
                what: "event name",
                len,
                limit: EVENT_NAME_MAX_LEN,
            });
        }
        let input = Json::encode(&payload).map_err(|error| Error::InvalidInput {
            name: format!("event `{name}`"),
            message: error.to_string(),
        })?;
        let command = Command::RaiseEvent {
            instance: instance.clone(),
            name,
            input,
        };
        self.submit(command).await
    }

    /// Suspends a running instance: it keeps receiving and storing events, activity results
    /// and timer firings, but runs no turn until resumed. Its status reads `Suspended`.
    /// Suspending a suspended instance does nothing.
    ///
    /// ```
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn deploy(ctx: OrchestrationContext, version: String) -> Result<String, Error> {
    ///     ctx.wait_for_event::<()>("approved").await?;
    ///     Ok(format!("deployed {version}"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(deploy).start().await?;
    /// let client = runtime.client();
    /// let deployment = client.start_with_id(deploy, "deploy-3", "v3".into()).await?;
    /// client.suspend("deploy-3", "freeze until Monday").await?;
    /// client.raise_event("deploy-3", "approved", ()).await?; // stored, not acted on
    /// let status = client.status("deploy-3").await?.expect("it exists");
    /// assert_eq!(status.runtime_status, RuntimeStatus::Suspended);
    ///
    /// client.resume("deploy-3", "the freeze is over").await?;
    /// assert_eq!(deployment.wait(Duration::from_secs(10)).await?, "deployed v3");
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotRunning`] for an ended instance.
    pub async fn suspend(
        &self,
        instance_id: impl AsRef<str>,
        reason: impl Into<String>,
    ) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let command = Command::Suspend {
            instance: instance.clone(),
            reason: checked_reason(reason.into())?,
        };
        self.submit(command).await
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
        let command = Command::Resume {
            instance: instance.clone(),
            reason: checked_reason(reason.into())?,
        };
        self.submit(command).await
    }

    /// Terminates a running instance: it ends as `Terminated` with `reason`, and its
    /// pending timers and activities are cancelled.
    ///
    /// ```
    /// use durable::client::Error as ClientError;
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn reminder(ctx: OrchestrationContext, days: u64) -> Result<(), Error> {
    ///     ctx.sleep(Duration::from_secs(days * 24 * 3600)).await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(reminder).start().await?;
    /// let client = runtime.client();
    /// let instance = client.start_with_id(reminder, "remind-ana", 30).await?;
    /// client.terminate("remind-ana", "ana unsubscribed").await?;
    /// match instance.wait(Duration::from_secs(10)).await {
    ///     Err(ClientError::Terminated { reason, .. }) => assert_eq!(reason, "ana unsubscribed"),
    ///     other => panic!("expected Terminated, got {other:?}"),
    /// }
    /// // Once ended, there is nothing to terminate.
    /// let again = client.terminate("remind-ana", "twice").await;
    /// assert!(matches!(again, Err(ClientError::NotRunning { .. })));
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotRunning`] for an ended instance, store errors.
    pub async fn terminate(
        &self,
        instance_id: impl AsRef<str>,
        reason: impl Into<String>,
    ) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let command = Command::Terminate {
            instance: instance.clone(),
            reason: checked_reason(reason.into())?,
        };
        self.submit(command).await
    }

    /// Starts an instance's orchestrator again with the input of its current execution:
    /// under a new generated id when `new_instance_id`, else under the same id (which must
    /// have ended). Returns the id that runs.
    ///
    /// ```
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn resize(_ctx: OrchestrationContext, pixels: u32) -> Result<u32, Error> {
    ///     Ok(pixels / 2)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(resize).start().await?;
    /// let client = runtime.client();
    /// let first = client.start_with_id(resize, "resize-1", 640).await?;
    /// first.wait(Duration::from_secs(10)).await?;
    ///
    /// // The same input again, under a new id: the first instance stays as it was.
    /// let copy = client.restart("resize-1", true).await?;
    /// assert_ne!(copy.as_str(), "resize-1");
    /// let status = client.wait_for_completion(&copy, Duration::from_secs(10)).await?;
    /// assert_eq!(status.output_as::<u32>()?, Some(320));
    /// assert!(client.status("resize-1").await?.is_some());
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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
            self::new_instance_id()
        } else {
            instance
        };
        self.submit(Command::Start {
            instance: id.clone(),
            name: status.name,
            input: status.input,
            start_at: None,
            reuse: IdReuse::IfEnded,
        })
        .await?;
        Ok(id)
    }

    /// Deletes an ended instance and its history.
    ///
    /// ```
    /// use durable::client::Error as ClientError;
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn wait_for_go(ctx: OrchestrationContext) -> Result<(), Error> {
    ///     ctx.wait_for_event::<()>("go").await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(wait_for_go).start().await?;
    /// let client = runtime.client();
    /// client.start_with_id(wait_for_go, "job-1", ()).await?;
    /// // Still running: not purged.
    /// let refused = client.purge("job-1").await;
    /// assert!(matches!(refused, Err(ClientError::NotEnded { .. })));
    ///
    /// client.raise_event("job-1", "go", ()).await?;
    /// client.wait_for_completion("job-1", Duration::from_secs(10)).await?;
    /// client.purge("job-1").await?;
    /// assert!(client.status("job-1").await?.is_none());
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotEnded`] for a running instance, store errors.
    pub async fn purge(&self, instance_id: impl AsRef<str>) -> Result<(), Error> {
        let instance = InstanceId::new(instance_id)?;
        let command = Command::Purge {
            instance: instance.clone(),
        };
        self.submit(command).await
    }

    /// Deletes every ended instance that matches `query` (running ones are skipped) and
    /// returns how many were deleted.
    ///
    /// ```
    /// use durable::prelude::*;
    /// use durable::{Clock, InstanceQuery, Timestamp};
    /// use std::time::{Duration, SystemTime};
    ///
    /// #[orchestrator]
    /// async fn step(_ctx: OrchestrationContext, n: u32) -> Result<u32, Error> {
    ///     Ok(n + 1)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = Clock::manual(SystemTime::now()); // moved by hand below
    /// let runtime = Runtime::builder()
    ///     .in_memory()
    ///     .clock(clock.clone())
    ///     .register(step)
    ///     .start()
    ///     .await?;
    /// let client = runtime.client();
    /// for n in 0..3 {
    ///     client.start(step, n).await?.wait(Duration::from_secs(10)).await?;
    /// }
    /// clock.advance(Duration::from_secs(8 * 24 * 3600)); // eight days later
    /// let recent = client.start(step, 9).await?;
    /// recent.wait(Duration::from_secs(10)).await?;
    ///
    /// // Keep a week of history: purge what ended before that.
    /// let week_ago = clock.now() - Duration::from_secs(7 * 24 * 3600);
    /// let old = InstanceQuery {
    ///     ended_before: Some(Timestamp::from_system_time(week_ago)),
    ///     ..InstanceQuery::default()
    /// };
    /// assert_eq!(client.purge_where(&old).await?, 3);
    /// assert!(client.status(recent.id()).await?.is_some());
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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
    /// ```
    /// use durable::prelude::*;
    /// use durable::store::HistoryEvent;
    /// use std::time::Duration;
    ///
    /// #[activity]
    /// async fn double(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    ///     Ok(x * 2)
    /// }
    ///
    /// #[orchestrator]
    /// async fn twice(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ///     let once = ctx.call_activity(double, x).await?;
    ///     ctx.call_activity(double, once).await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder()
    ///     .in_memory()
    ///     .register(twice)
    ///     .register(double)
    ///     .start()
    ///     .await?;
    /// let client = runtime.client();
    /// let instance = client.start(twice, 5).await?;
    /// assert_eq!(instance.wait(Duration::from_secs(10)).await?, 20);
    ///
    /// let status = client.status_with_history(instance.id()).await?.expect("it exists");
    /// let history = status.history.expect("asked for");
    /// let count = |is: fn(&HistoryEvent) -> bool| history.iter().filter(|e| is(e)).count();
    /// assert_eq!(count(|e| matches!(e, HistoryEvent::TaskScheduled { .. })), 2);
    /// assert_eq!(count(|e| matches!(e, HistoryEvent::TaskCompleted { .. })), 2);
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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
    /// ```
    /// use durable::client::Error as ClientError;
    /// use durable::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn checks(_ctx: OrchestrationContext, amount: i64) -> Result<i64, Error> {
    ///     if amount < 0 {
    ///         return Err(Error::msg("a negative amount"));
    ///     }
    ///     Ok(amount)
    /// }
    ///
    /// #[orchestrator]
    /// async fn waits(ctx: OrchestrationContext) -> Result<(), Error> {
    ///     ctx.wait_for_event::<()>("never sent").await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder()
    ///     .in_memory()
    ///     .register(checks)
    ///     .register(waits)
    ///     .start()
    ///     .await?;
    /// let client = runtime.client();
    /// client.start_with_id(checks, "check-1", -5).await?;
    /// let status = client.wait_for_completion("check-1", Duration::from_secs(10)).await?;
    /// assert_eq!(status.runtime_status, RuntimeStatus::Failed);
    /// assert!(status.failure.unwrap().message.contains("a negative amount"));
    ///
    /// client.start_with_id(waits, "wait-1", ()).await?;
    /// let waited = client.wait_for_completion("wait-1", Duration::from_millis(10)).await;
    /// assert!(matches!(waited, Err(ClientError::Timeout { .. })));
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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
        let mut poll = self.backend.end_poll(&instance);
        loop {
            let watch = self.backend.watch(&instance)?;
            let outcome = {
                let notified = watch.notify().notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // Woken by the watch, or, for instances run elsewhere, after a while.
                let ended = async {
                    match poll {
                        Some(every) => {
                            let _ = tokio::time::timeout(every, notified).await;
                        }
                        None => notified.await,
                    }
                };
                tokio::pin!(ended);
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
            // Looked at again and again, an instance that runs long is looked at less
            // often: up to once a second.
            poll = poll.map(|every| (every * 2).min(Duration::from_secs(1)));
        }
    }

    /// One page of instances matching `query`, in id order: at most `page_size`, starting
    /// after the page that returned `continuation`.
    ///
    /// ```
    /// use durable::prelude::*;
    /// use durable::InstanceQuery;
    /// use std::time::Duration;
    ///
    /// #[orchestrator]
    /// async fn greet(_ctx: OrchestrationContext, name: String) -> Result<String, Error> {
    ///     Ok(format!("hello, {name}"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().in_memory().register(greet).start().await?;
    /// let client = runtime.client();
    /// for name in ["ada", "bo", "cy"] {
    ///     let greeting = client.start_with_id(greet, format!("greet-{name}"), name.into());
    ///     greeting.await?.wait(Duration::from_secs(10)).await?;
    /// }
    /// let query = InstanceQuery {
    ///     statuses: Some(vec![RuntimeStatus::Completed]),
    ///     id_prefix: Some("greet-".to_owned()),
    ///     ..InstanceQuery::default()
    /// };
    /// let first = client.list(&query, 2, None).await?;
    /// let ids: Vec<&str> = first.instances.iter().map(|i| i.instance_id.as_str()).collect();
    /// assert_eq!(ids, ["greet-ada", "greet-bo"]);
    /// let next = first.continuation.as_deref().expect("a second page");
    /// let second = client.list(&query, 2, Some(next)).await?;
    /// assert_eq!(second.instances[0].instance_id.as_str(), "greet-cy");
    /// assert!(second.continuation.is_none(), "the last page");
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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

    /// Checks a command and sends it to the backend; returns once its effects are durable.
    pub(super) async fn submit(&self, command: Command) -> Result<(), Error> {
        self.check(&command, Arguments::Check)?;
        self.backend.submit(command).await
    }

    /// Submits a signal of a generated entity proxy, whose operation and argument types
    /// the compiler checked: decoding its arguments again would only cost time.
    pub(super) async fn submit_typed_signal(&self, command: Command) -> Result<(), Error> {
        self.check(&command, Arguments::Typed)?;
        self.backend.submit(command).await
    }

    /// What can be told before a command is sent: that its instance id is not too long,
    /// its payload not too large, and the orchestrator or entity type it names registered.
    fn check(&self, command: &Command, arguments: Arguments) -> Result<(), Error> {
        let limits = self.backend.limits();
        if let Command::Start { instance, .. } = command {
            let len = instance.as_str().chars().count();
            if len > limits.max_instance_id_len {
                return Err(Error::InstanceIdTooLong {
                    id: instance.to_string(),
                    len,
                    limit: limits.max_instance_id_len,
                });
            }
        }
        if let Some(payload) = command.payload() {
            limits.check_payload(payload.len(), || command.payload_name())?;
        }
        // Without a registry (a client of a shared database) the runtime checks names;
        // a signal's operation and input are then checked only when it runs.
        let Some(registry) = self.backend.registry() else {
            return Ok(());
        };
        match command {
            Command::Start { name, .. } if !registry.has_orchestrator(name) => {
                Err(Error::NotRegistered {
                    kind: Kind::Orchestrator,
                    name: name.clone(),
                })
            }
            Command::DeleteEntity { entity } if !registry.has_entity(entity.name()) => {
                Err(Error::NotRegistered {
                    kind: Kind::Entity,
                    name: entity.name().to_owned(),
                })
            }
            Command::SignalEntity {
                entity,
                operation,
                input,
            } => {
                let entry = registry
                    .entity(entity.name())
                    .ok_or_else(|| Error::NotRegistered {
                        kind: Kind::Entity,
                        name: entity.name().to_owned(),
                    })?;
                if arguments == Arguments::Typed {
                    return Ok(());
                }
                (entry.check_operation)(operation, input).map_err(|error| {
                    Error::of_operation(error, entity.name(), operation, (entry.operations)())
                })
            }
            _ => Ok(()),
        }
    }

    /// The registry of what runs the instances, when this side knows it.
    pub(super) fn registry(&self) -> Option<&Registry> {
        self.backend.registry()
    }

    /// Runs a store read on the blocking pool.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn Store) -> Result<T, durable_store::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.backend.store()?;
        tokio::task::spawn_blocking(move || read(&*store))
            .await
            .map_err(|_| Error::ShuttingDown)?
            .map_err(Error::from)
    }
}

/// A new instance id, for starts that do not name one: a random UUID, so that ids minted
/// by many clients and processes never collide.
pub(crate) fn new_instance_id() -> InstanceId {
    InstanceId::new(uuid::Uuid::new_v4().simple().to_string())
        .unwrap_or_else(|error| unreachable!("a UUID is a valid instance id: {error}"))
}

/// Options of [`Client::start_with`].
///
/// ```
/// use durable::client::{IdReuse, StartOptions};
/// use std::time::{Duration, SystemTime};
/// let options = StartOptions::new()
///     .instance_id("nightly-report")
///     .at(SystemTime::now() + Duration::from_secs(3600))
///     .reuse(IdReuse::Never);
/// assert_eq!(options.instance_id.as_deref(), Some("nightly-report"));
/// assert_eq!(options.reuse, IdReuse::Never);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StartOptions {
    /// The instance id; a new one is generated when `None`.
    pub instance_id: Option<String>,
    /// Start not before this time; at once when `None` or past.
    pub start_at: Option<SystemTime>,
    /// What the start does when an instance with its id already exists (by default it
    /// replaces an ended one only).
    pub reuse: IdReuse,
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

    /// What to do when an instance with the id already exists: see [`IdReuse`].
    #[must_use]
    pub fn reuse(mut self, reuse: IdReuse) -> StartOptions {
        self.reuse = reuse;
        self
    }
}

fn encode_continuation(id: &InstanceId) -> String {
    encode_hex(id.as_str())
}

pub(super) fn encode_hex(text: &str) -> String {
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

pub(super) fn decode_entity_continuation(token: &str) -> Result<EntityId, Error> {
    let text = decode_hex(token).ok_or(Error::InvalidContinuation)?;
    let (name, key) = text
        .strip_prefix('@')
        .and_then(|rest| rest.split_once('@'))
        .ok_or(Error::InvalidContinuation)?;
    EntityId::new(name, key).map_err(|_| Error::InvalidContinuation)
}

/// An input as it was meant, when a client encoded it twice (a JSON string whose text is
/// JSON, as Durable Functions' Python client sends it): the text, when it is a quoted
/// string itself, or when the orchestrator's input type takes it and not the string.
/// Otherwise the input as it came (an orchestration decodes such a string once more
/// anyway, [`Json::decode`]); stored so, its status shows it as sent.
pub(crate) fn once_encoded(input: Json, check: Option<durable_core::InputCheck>) -> Json {
    let Some(text) = serde_json::from_str::<String>(input.as_str()).ok() else {
        return input;
    };
    let Ok(inner) = Json::parse(&text) else {
        return input;
    };
    let quoted = serde_json::from_str::<String>(inner.as_str()).is_ok();
    let typed = check.is_some_and(|check| check(&input).is_err() && check(&inner).is_ok());
    if quoted || typed { inner } else { input }
}

/// The longest event name [`Client::raise_event`] takes, in characters.
pub const EVENT_NAME_MAX_LEN: usize = 256;

/// The longest reason [`Client::terminate`], [`Client::suspend`] and [`Client::resume`]
/// take, in characters: it is stored in the instance's history.
pub const REASON_MAX_LEN: usize = 4096;

fn checked_reason(reason: String) -> Result<String, Error> {
    let len = reason.chars().count();
    if len > REASON_MAX_LEN {
        return Err(Error::TooLong {
            what: "reason",
            len,
            limit: REASON_MAX_LEN,
        });
    }
    Ok(reason)
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

/// Whether a signal's operation and arguments are checked against the entity type before
/// it is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arguments {
    /// Untyped (JSON): check them.
    Check,
    /// From a generated proxy: the compiler did.
    Typed,
}
