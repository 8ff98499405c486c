//! The store's error type: every failure of a store operation, with a message that says
//! what to do about it.

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
        "the store at {path} has format version {found}, but this build reads version {expected}; open it with a matching version of durable, or start from an empty directory"
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
        "corrupt record in keyspace `{keyspace}`{}: {detail}",
        instance.as_ref().map(|id| format!(" of instance `{id}`")).unwrap_or_default()
    )]
    Corrupt {
        /// The keyspace the record was read from.
        keyspace: &'static str,
        /// The instance the record belongs to, when known.
        instance: Option<String>,
        /// What is wrong with it.
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
