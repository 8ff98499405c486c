//! [`IdReuse`]: what a start does when an instance with its id already exists. The
//! client carries it in the start command; the runtime's shard decides it (see
//! `runtime/shard/routing.rs`), so it is never stored.

/// What a start does when an instance with its id already exists: its id reuse policy,
/// set with [`StartOptions::reuse`](super::StartOptions::reuse). The runtime decides it
/// where it runs the instance, in order with everything else sent to that id, so of two
/// racing starts that may not both succeed, one does and the other gets
/// [`AlreadyExists`](super::Error::AlreadyExists).
///
/// | existing instance | `IfEnded` (default) | `Never` | `TerminateRunning` |
/// |---|---|---|---|
/// | none | starts | starts | starts |
/// | completed, failed, terminated | replaces it | `AlreadyExists` | replaces it |
/// | running, pending (a scheduled start), suspended | `AlreadyExists` | `AlreadyExists` | terminates it, then replaces it |
///
/// Replacing an instance deletes the history of its last execution and starts a new
/// execution under the same id; its output is gone. A start that must happen once per id
/// (a batch started at every boot, a payment) wants `Never`: a second start then gets
/// `AlreadyExists` with the status of the one that exists, and leaves it as it is.
///
/// For the Durable Task protocol's `OrchestrationIdReusePolicy`, whose
/// `replaceableStatus` lists the statuses a start may replace: `Never` is the empty list,
/// `IfEnded` the three ended statuses (and the protocol's default), `TerminateRunning`
/// every status.
///
/// ```
/// use durable::client::{Error as ClientError, IdReuse, StartOptions};
/// use durable::prelude::*;
/// use std::time::Duration;
///
/// #[orchestrator]
/// async fn nightly_batch(_ctx: OrchestrationContext, day: u32) -> Result<u32, Error> {
///     Ok(day)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::builder().in_memory().register(nightly_batch).start().await?;
/// let client = runtime.client();
/// let once = StartOptions::new().instance_id("batch-0611").reuse(IdReuse::Never);
/// let batch = client.start_with(nightly_batch, 611, once.clone()).await?;
/// batch.wait(Duration::from_secs(5)).await?;
///
/// // Started again (say, at the next boot): the completed batch stays as it is.
/// match client.start_with(nightly_batch, 611, once).await {
///     Err(ClientError::AlreadyExists { status, .. }) => assert!(status.is_terminal()),
///     other => panic!("expected AlreadyExists, got {other:?}"),
/// }
/// runtime.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdReuse {
    /// Start if no instance has the id, or replace one that has ended (completed, failed
    /// or terminated); one that has not ended is `AlreadyExists`. Durable
    /// Functions' behaviour, and the default.
    #[default]
    IfEnded,
    /// Start only if no instance has the id; any instance that has it, ended or not, stays
    /// as it is and the start is `AlreadyExists`.
    Never,
    /// Always start: an instance that has not ended is terminated (its parent, if any,
    /// hears so; its timers and activities are cancelled) and replaced in the same commit;
    /// an ended one is replaced.
    TerminateRunning,
}
