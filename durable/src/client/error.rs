//! [`Error`]: why a client operation failed, with a message that says what to do.

use crate::registry::Kind;
use durable_core::OperationError;
use durable_types::{Failure, InstanceId, InvalidInstanceId, RuntimeStatus};
use std::sync::Arc;
use std::time::Duration;

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
    /// Starting an id that an instance has, which the start's
    /// [`IdReuse`](super::IdReuse) policy does not let it replace: one that has not ended
    /// (by default), or any (with `IdReuse::Never`).
    #[error("{}", already_exists(instance, *status))]
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
    /// No orchestrator (or entity type) of this name is registered.
    #[error("{}", not_registered(*.kind, .name))]
    NotRegistered {
        /// What the name was asked for as: an orchestrator or an entity type.
        kind: Kind,
        /// The name asked for.
        name: String,
    },
    /// A signal names an operation its entity type does not have.
    #[error(
        "entity `{entity}` has no operation `{operation}`; its operations are: {}",
        .known.join(", ")
    )]
    UnknownOperation {
        /// The entity type's name.
        entity: String,
        /// The operation asked for.
        operation: String,
        /// The entity type's operations.
        known: Vec<String>,
    },
    /// A signal's input does not decode as its operation's arguments.
    #[error(
        "invalid input for operation `{operation}` of entity `{entity}`: {message}; send its argument as JSON (several arguments as an array, in order)"
    )]
    InvalidEntityInput {
        /// The entity type's name.
        entity: String,
        /// The operation.
        operation: String,
        /// What is wrong.
        message: String,
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
        "instance id `{id}` is {len} characters long; this runtime accepts at most {limit} (max_instance_id_len)"
    )]
    InstanceIdTooLong {
        /// The id.
        id: String,
        /// Its length in characters.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A name or text is longer than its limit: an event name
    /// ([`EVENT_NAME_MAX_LEN`](super::EVENT_NAME_MAX_LEN)) or a reason
    /// ([`REASON_MAX_LEN`](super::REASON_MAX_LEN)).
    #[error("the {what} is {len} characters long; the limit is {limit}")]
    TooLong {
        /// What it was: "event name", "reason".
        what: &'static str,
        /// Its length in characters.
        len: usize,
        /// The limit.
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

impl Error {
    /// The error for a signal of `operation` to entity type `entity` that its check
    /// refused; `known` are the type's operations.
    pub(crate) fn of_operation(
        error: OperationError,
        entity: &str,
        operation: &str,
        known: &[&str],
    ) -> Error {
        match error {
            OperationError::Unknown => Error::UnknownOperation {
                entity: entity.to_owned(),
                operation: operation.to_owned(),
                known: known.iter().map(|name| (*name).to_owned()).collect(),
            },
            OperationError::InvalidInput(message) => Error::InvalidEntityInput {
                entity: entity.to_owned(),
                operation: operation.to_owned(),
                message,
            },
        }
    }
}

/// What to add to the runtime builder for a name it does not know.
fn not_registered(kind: Kind, name: &str) -> String {
    let advice = match kind {
        Kind::Entity => format!(
            "add `.register_entity::<T>()` to the runtime builder, with `T` the type whose `#[entity]` is named `{name}`"
        ),
        _ => format!("add `.register({name})` to the runtime builder"),
    };
    format!("no {kind} named `{name}` is registered with this runtime; {advice}")
}

/// The message of [`Error::AlreadyExists`]: what to do depends on whether the instance has
/// ended.
fn already_exists(instance: &InstanceId, status: RuntimeStatus) -> String {
    if status.is_terminal() {
        format!(
            "instance `{instance}` already exists and has ended ({status}); this start may not replace it (IdReuse::Never): purge it first, or start another id"
        )
    } else {
        format!(
            "instance `{instance}` already exists and is {status}; wait for it to end, terminate it, or start another id"
        )
    }
}

impl From<durable_core::PayloadTooLarge> for Error {
    fn from(too_large: durable_core::PayloadTooLarge) -> Self {
        Error::PayloadTooLarge {
            what: too_large.what,
            bytes: too_large.bytes,
            limit: too_large.limit,
        }
    }
}

impl From<durable_store::Error> for Error {
    fn from(error: durable_store::Error) -> Self {
        Error::Store(Arc::new(error))
    }
}
