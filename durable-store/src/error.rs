//! The store's error type: every failure of a store operation, with a message that says
//! what to do about it.

use durable_types::{ActivityKey, EntityId, InboxKey, TimerKey, TimerPurpose};
use durable_types::{ExecutionId, InstanceId};
use std::fmt;
use std::path::PathBuf;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another runtime in this process) has the store directory open.
    #[error(
        "the store at {path} is in use by another process; stop that process, or open a different directory"
    )]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// The directory holds a store of a format this build cannot read.
    #[error(
        "the store at {path} has format version {found}, but this build reads version {expected} and cannot convert it: let its instances finish under the build that wrote it, or start this build on an empty directory (move the old one aside to keep it)"
    )]
    IncompatibleFormat {
        /// The store directory.
        path: PathBuf,
        /// The version found on disk (0 when the directory holds data but no version key).
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// A stored record could not be decoded.
    #[error(
        "corrupt record in keyspace `{keyspace}`{}{}: {detail}",
        instance.as_ref().map(|id| format!(" of instance `{id}`")).unwrap_or_default(),
        key.as_ref().map(|key| format!(" at {key}")).unwrap_or_default()
    )]
    Corrupt {
        /// The keyspace the record was read from.
        keyspace: &'static str,
        /// The instance the record belongs to, when known.
        instance: Option<String>,
        /// What is wrong with it.
        detail: String,
        /// Where the record is stored, when the key could be read: a scan can resume after
        /// it, so one damaged record need not hide the others.
        key: Option<RecordKey>,
    },
    /// The store's files are damaged below the level of records (a journal or table
    /// checksum does not match): the storage engine cannot read them.
    #[error(
        "the store files at {path} are damaged ({detail}); restore the directory from a backup, or move it aside and start from an empty one"
    )]
    Damaged {
        /// The store directory.
        path: PathBuf,
        /// What the storage engine reported.
        detail: String,
    },
    /// An earlier write or fsync failed; the store refuses further writes because what is on
    /// disk is unknown.
    #[error(
        "the store refuses writes because an earlier write or fsync failed; restart the process to recover from the last committed state"
    )]
    Poisoned,
    /// The disk is full.
    #[error("the disk holding the store is full; free space, then retry or restart: {0}")]
    StorageFull(#[source] std::io::Error),
    /// The store directory cannot be written.
    #[error("the store at {path} is read-only: {source}; open it on a writable filesystem")]
    ReadOnly {
        /// The store directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database server cannot be reached, or refused the operation; nothing of a
    /// refused write was applied.
    #[error(
        "the database is unavailable: {0}; check that the server runs and the connection string, then retry"
    )]
    Unavailable(String),
    /// A schema (task hub) name that is not lowercase letters, digits and `_`.
    #[error(
        "`{0}` cannot name a schema: use 1 to 63 lowercase letters, digits and `_`, not starting with a digit"
    )]
    InvalidSchema(String),
    /// Another runtime holds the schema: one runtime per schema, until worker processes
    /// share one through partition leases.
    #[error("schema `{0}` is in use by another runtime; stop it, or give this one another schema")]
    SchemaInUse(String),
    /// A fenced write of a worker that no longer holds these partitions (another took
    /// them over); it applied nothing.
    #[error(
        "this worker no longer owns partitions {partitions:?} (another worker took them over); the write applied nothing"
    )]
    Fenced {
        /// The partitions lost.
        partitions: Vec<u16>,
    },
    /// Any other I/O error.
    #[error("I/O error in the store: {0}")]
    Io(#[from] std::io::Error),
    /// The storage engine reported an error not covered above.
    #[error("storage engine error: {0}")]
    Backend(String),
}

impl Error {
    /// Classifies an I/O error met while opening or writing the store at `path`.
    pub fn from_io(path: &std::path::Path, error: std::io::Error) -> Error {
        match error.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Error::StorageFull(error)
            }
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                Error::ReadOnly {
                    path: path.to_owned(),
                    source: error,
                }
            }
            _ => Error::Io(error),
        }
    }
}

/// Where a record is stored: the typed form of its key, for errors that point at one
/// record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKey {
    /// A store-wide value such as the execution floor.
    Meta(&'static str),
    /// An instance record.
    Instance(InstanceId),
    /// A history event.
    History {
        /// The instance.
        instance: InstanceId,
        /// The execution.
        execution: ExecutionId,
        /// The event's sequence number.
        seq: u64,
    },
    /// An inbox message.
    Inbox(InboxKey),
    /// An activity work item.
    Activity(ActivityKey),
    /// A timer.
    Timer(TimerKey),
    /// An entity record.
    Entity(EntityId),
}

impl RecordKey {
    /// The instance the record belongs to, if it belongs to one.
    pub fn instance(&self) -> Option<InstanceId> {
        match self {
            RecordKey::Meta(_) => None,
            RecordKey::Instance(instance) | RecordKey::History { instance, .. } => {
                Some(instance.clone())
            }
            RecordKey::Inbox(key) => Some(key.instance.clone()),
            RecordKey::Activity(key) => Some(key.instance.clone()),
            RecordKey::Timer(key) => Some(key.instance.clone()),
            RecordKey::Entity(id) => Some(id.instance_id()),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::Meta(name) => write!(f, "meta key `{name}`"),
            RecordKey::Instance(id) => write!(f, "instance record `{id}`"),
            RecordKey::History {
                instance,
                execution,
                seq,
            } => write!(
                f,
                "history event {seq} of execution {execution} of `{instance}`"
            ),
            RecordKey::Inbox(key) => write!(f, "inbox message {} of `{}`", key.seq, key.instance),
            RecordKey::Activity(key) => write!(
                f,
                "activity work item of task {} of execution {} of `{}`",
                key.task, key.execution, key.instance
            ),
            RecordKey::Timer(key) => {
                match key.purpose {
                    TimerPurpose::Task(task) => write!(f, "timer of task {task}")?,
                    TimerPurpose::ScheduledStart => f.write_str("scheduled-start timer")?,
                }
                write!(
                    f,
                    " of execution {} of `{}`, due at {} ms",
                    key.execution, key.instance, key.fire_at.0
                )
            }
            RecordKey::Entity(id) => write!(f, "entity record `{id}`"),
        }
    }
}
