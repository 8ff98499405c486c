//! What workers sharing a schema send each other through its `messages` table, and how a
//! request from another process is answered through its `replies` table: an
//! [`Envelope`] (an inbox message for an instance of another partition, or a client's
//! command for an instance another worker owns) and a [`WireReply`]. Encoded with the
//! store's codec (postcard); new variants go at the end.

use crate::client::{Command, IdReuse};
use crate::runtime::handle::{Rejection, Reply};
use durable_store::codec::{Space, decode_value, encode_value};
use durable_types::{
    EntityId, Failure, InboxKey, InboxMessage, InstanceId, Json, RuntimeStatus, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One row of the `messages` table.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Envelope {
    /// A message for the inbox of an instance of the target partition, keyed as its sender
    /// keyed it.
    Inbox {
        instance: InstanceId,
        seq: u64,
        message: InboxMessage,
    },
    /// A command for an instance of the target partition; its answer goes to the
    /// `replies` row `request`.
    Command { request: i64, command: WireCommand },
}

impl Envelope {
    pub(crate) fn inbox(key: InboxKey, message: InboxMessage) -> Envelope {
        Envelope::Inbox {
            instance: key.instance,
            seq: key.seq,
            message,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_value(self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, durable_store::Error> {
        decode_value(Space::Inbox, None, bytes)
    }
}

/// [`Command`], as sent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireCommand {
    Start {
        instance: InstanceId,
        name: String,
        input: Json,
        start_at: Option<Timestamp>,
        reuse: u8,
    },
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
    Purge {
        instance: InstanceId,
    },
    SignalEntity {
        entity: EntityId,
        operation: String,
        input: Json,
    },
    DeleteEntity {
        entity: EntityId,
    },
}

impl From<Command> for WireCommand {
    fn from(command: Command) -> WireCommand {
        match command {
            Command::Start {
                instance,
                name,
                input,
                start_at,
                reuse,
            } => WireCommand::Start {
                instance,
                name,
                input,
                start_at,
                reuse: match reuse {
                    IdReuse::IfEnded => 0,
                    IdReuse::Never => 1,
                    IdReuse::TerminateRunning => 2,
                },
            },
            Command::RaiseEvent {
                instance,
                name,
                input,
            } => WireCommand::RaiseEvent {
                instance,
                name,
                input,
            },
            Command::Terminate { instance, reason } => WireCommand::Terminate { instance, reason },
            Command::Suspend { instance, reason } => WireCommand::Suspend { instance, reason },
            Command::Resume { instance, reason } => WireCommand::Resume { instance, reason },
            Command::Purge { instance } => WireCommand::Purge { instance },
            Command::SignalEntity {
                entity,
                operation,
                input,
            } => WireCommand::SignalEntity {
                entity,
                operation,
                input,
            },
            Command::DeleteEntity { entity } => WireCommand::DeleteEntity { entity },
        }
    }
}

impl From<WireCommand> for Command {
    fn from(command: WireCommand) -> Command {
        match command {
            WireCommand::Start {
                instance,
                name,
                input,
                start_at,
                reuse,
            } => Command::Start {
                instance,
                name,
                input,
                start_at,
                reuse: match reuse {
                    1 => IdReuse::Never,
                    2 => IdReuse::TerminateRunning,
                    _ => IdReuse::IfEnded,
                },
            },
            WireCommand::RaiseEvent {
                instance,
                name,
                input,
            } => Command::RaiseEvent {
                instance,
                name,
                input,
            },
            WireCommand::Terminate { instance, reason } => Command::Terminate { instance, reason },
            WireCommand::Suspend { instance, reason } => Command::Suspend { instance, reason },
            WireCommand::Resume { instance, reason } => Command::Resume { instance, reason },
            WireCommand::Purge { instance } => Command::Purge { instance },
            WireCommand::SignalEntity {
                entity,
                operation,
                input,
            } => Command::SignalEntity {
                entity,
                operation,
                input,
            },
            WireCommand::DeleteEntity { entity } => Command::DeleteEntity { entity },
        }
    }
}

/// A [`Reply`], as written to the `replies` table.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireReply {
    Done,
    AlreadyExists(RuntimeStatus),
    NotFound,
    NotRunning(RuntimeStatus),
    NotEnded(RuntimeStatus),
    CannotRun(Failure),
    EntityNotRegistered(String),
    Store(String),
    Poisoned,
    Moved,
}

impl WireReply {
    pub(crate) fn encode(reply: &Reply) -> Vec<u8> {
        let wire = match reply {
            Ok(()) => WireReply::Done,
            Err(Rejection::AlreadyExists { status }) => WireReply::AlreadyExists(*status),
            Err(Rejection::NotFound) => WireReply::NotFound,
            Err(Rejection::NotRunning { status }) => WireReply::NotRunning(*status),
            Err(Rejection::NotEnded { status }) => WireReply::NotEnded(*status),
            Err(Rejection::CannotRun(failure)) => WireReply::CannotRun(failure.clone()),
            Err(Rejection::EntityNotRegistered { name }) => {
                WireReply::EntityNotRegistered(name.clone())
            }
            Err(Rejection::Store(error)) => WireReply::Store(error.to_string()),
            Err(Rejection::Poisoned) => WireReply::Poisoned,
            Err(Rejection::Moved) => WireReply::Moved,
        };
        encode_value(&wire)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Reply {
        let wire: WireReply = match decode_value(Space::Meta, None, bytes) {
            Ok(wire) => wire,
            Err(error) => return Err(Rejection::Store(Arc::new(error))),
        };
        match wire {
            WireReply::Done => Ok(()),
            WireReply::AlreadyExists(status) => Err(Rejection::AlreadyExists { status }),
            WireReply::NotFound => Err(Rejection::NotFound),
            WireReply::NotRunning(status) => Err(Rejection::NotRunning { status }),
            WireReply::NotEnded(status) => Err(Rejection::NotEnded { status }),
            WireReply::CannotRun(failure) => Err(Rejection::CannotRun(failure)),
            WireReply::EntityNotRegistered(name) => Err(Rejection::EntityNotRegistered { name }),
            WireReply::Store(message) => Err(Rejection::Store(Arc::new(
                durable_store::Error::Backend(message),
            ))),
            WireReply::Poisoned => Err(Rejection::Poisoned),
            WireReply::Moved => Err(Rejection::Moved),
        }
    }
}
