//! The fjall engine: the embedded default. One fjall database per store directory, one
//! keyspace per [`Space`], every commit one atomic fjall write batch followed (by default)
//! by one `fdatasync` of the journal.
//!
//! fjall recovers its journal by dropping any batch that does not check out, and
//! everything after it, as a torn tail: right for the last batch of a crash, silent data
//! loss for a byte damaged in the middle. So every commit also writes its number (the
//! `commit_seq` meta key), and after each commit acknowledged with `fdatasync` the number
//! goes to a small file beside the database (the commit mark, written without a sync of
//! its own: it may lag, never lead). At open, a journal that recovered fewer commits than
//! the mark says were acknowledged has lost some: the store refuses to open, saying so,
//! instead of running on without them.

use crate::codec::Space;
use crate::error::Error;
use crate::kv::{KvEngine, KvOp, KvStore, Scan, Visitor};
use crate::store::Durability;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::HashSet;
use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The fjall [`KvEngine`].
pub struct FjallEngine {
    db: Database,
    spaces: Vec<Keyspace>,
    durability: Durability,
    path: PathBuf,
    /// The number of the last commit, and the commit mark file; held while committing so
    /// that numbers follow the journal's order.
    commits: Mutex<(u64, CommitMark)>,
}

/// The file that records the last commit acknowledged after `fdatasync`: 16 bytes, the
/// number and its complement (a mark that does not check out is ignored, never trusted).
struct CommitMark {
    file: File,
    path: PathBuf,
}

/// The commit mark's file name, in the store directory.
pub const COMMIT_MARK_FILE: &str = "durable-commit-mark";

impl CommitMark {
    fn open(dir: &Path) -> Result<CommitMark, Error> {
        let path = dir.join(COMMIT_MARK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| Error::from_io(dir, error))?;
        Ok(CommitMark { file, path })
    }

    /// The acknowledged commit it records, if it holds a valid one.
    fn read(&self) -> Option<u64> {
        let mut bytes = [0u8; 16];
        self.file.read_exact_at(&mut bytes, 0).ok()?;
        let (number, check) = bytes.split_at(8);
        let number = u64::from_be_bytes(number.try_into().ok()?);
        let check = u64::from_be_bytes(check.try_into().ok()?);
        (check == !number).then_some(number)
    }

    /// Records `number` (no sync: a mark that lags after a power loss only weakens the
    /// check; one that led would be a false alarm, and the journal is synced first).
    fn write(&self, number: u64) -> std::io::Result<()> {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&number.to_be_bytes());
        bytes[8..].copy_from_slice(&(!number).to_be_bytes());
        self.file.write_all_at(&bytes, 0)
    }
}

/// The embedded default [`crate::Store`]: fjall, an LSM-tree, in one directory.
///
/// Only one process may open a directory at a time; a second open fails with
/// [`Error::Locked`].
///
/// ```
/// use durable_store::{Durability, FjallStore, Store};
/// let dir = tempfile::tempdir()?;
/// let store = FjallStore::open(dir.path(), Durability::Fsync)?;
/// assert_eq!(store.name(), "fjall");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type FjallStore = KvStore<FjallEngine>;

impl KvStore<FjallEngine> {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// # Errors
    /// [`Error::Locked`] when another process has it open, [`Error::IncompatibleFormat`] for a
    /// store of another format version, [`Error::ReadOnly`] and [`Error::StorageFull`] for
    /// a directory that cannot be written, [`Error::Damaged`] for files whose checksums do
    /// not match, other I/O errors.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<FjallStore, Error> {
        let engine = FjallEngine::open(path.as_ref(), durability)?;
        let path = engine.path.clone();
        KvStore::with_engine(engine, &path)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.engine().path
    }
}

impl FjallEngine {
    fn open(path: &Path, durability: Durability) -> Result<FjallEngine, Error> {
        std::fs::create_dir_all(path).map_err(|error| Error::from_io(path, error))?;
        let opened = std::panic::catch_unwind(|| {
            Database::builder(path)
                // We decide when to persist: after each commit, per `durability`.
                .manual_journal_persist(true)
                .open()
        });
        // fjall checks what it reads back from its journal partly with debug assertions,
        // which a torn journal tail trips in a debug build: the files are damaged, and
        // saying so beats taking the process down.
        let db = opened
            .map_err(|panic| Error::Damaged {
                path: path.to_owned(),
                detail: format!(
                    "fjall panicked while recovering: {}; a debug build of fjall asserts on a torn journal tail that a release build drops",
                    panic_message(&*panic)
                ),
            })?
            .map_err(|error| map_error(path, error))?;
        let mut spaces = Vec::with_capacity(Space::ALL.len());
        for space in Space::ALL {
            let keyspace = db
                .keyspace(space.name(), KeyspaceCreateOptions::default)
                .map_err(|error| map_error(path, error))?;
            spaces.push(keyspace);
        }
        let recovered = match spaces[Space::Meta.index()]
            .get(crate::codec::COMMIT_SEQ_KEY.as_bytes())
            .map_err(|error| map_error(path, error))?
        {
            Some(bytes) => <[u8; 8]>::try_from(&*bytes)
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Damaged {
                    path: path.to_owned(),
                    detail: format!("the commit number is {} bytes, not 8", bytes.len()),
                })?,
            None => 0,
        };
        let mark = CommitMark::open(path)?;
        if let Some(acknowledged) = mark.read()
            && acknowledged > recovered
        {
            return Err(Error::Damaged {
                path: path.to_owned(),
                detail: format!(
                    "its journal recovered {recovered} commits, but {acknowledged} were acknowledged as durable: fjall dropped a damaged part of the journal and what followed it. To open it anyway, accepting that loss, delete {}",
                    mark.path.display()
                ),
            });
        }
        Ok(FjallEngine {
            db,
            spaces,
            durability,
            path: path.to_owned(),
            commits: Mutex::new((recovered, mark)),
        })
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        &self.spaces[space.index()]
    }

    fn error(&self, error: fjall::Error) -> Error {
        map_error(&self.path, error)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn map_error(path: &Path, error: fjall::Error) -> Error {
    use fjall::LsmError;
    let damaged = |detail: String| Error::Damaged {
        path: path.to_owned(),
        detail: format!("fjall: {detail}"),
    };
    match error {
        fjall::Error::Locked => Error::Locked {
            path: path.to_owned(),
        },
        fjall::Error::Poisoned => Error::Poisoned,
        fjall::Error::Io(error) | fjall::Error::Storage(LsmError::Io(error)) => {
            Error::from_io(path, error)
        }
        // Checksums, tags and headers that do not match: the files, not a record, are bad.
        fjall::Error::JournalRecovery(error) => damaged(format!("journal recovery: {error}")),
        fjall::Error::Storage(
            error @ (LsmError::ChecksumMismatch { .. }
            | LsmError::Decompress(_)
            | LsmError::InvalidTag(_)
            | LsmError::InvalidTrailer
            | LsmError::InvalidHeader(_)
            | LsmError::InvalidVersion(_)
            | LsmError::Unrecoverable
            | LsmError::Utf8(_)),
        ) => damaged(format!("{error:?}")),
        error @ (fjall::Error::InvalidTrailer
        | fjall::Error::InvalidTag(_)
        | fjall::Error::Decompress(_)
        | fjall::Error::InvalidVersion(_)
        | fjall::Error::Unrecoverable) => damaged(format!("{error:?}")),
        other => Error::Backend(format!("fjall: {other:?}")),
    }
}

impl KvEngine for FjallEngine {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let value = self.keyspace(space).get(key).map_err(|e| self.error(e))?;
        Ok(value.map(|slice| slice.to_vec()))
    }

    fn scan(
        &self,
        space: Space,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), Error> {
        for guard in self.keyspace(space).range::<&[u8], _>((lower, upper)) {
            let (key, value) = guard.into_inner().map_err(|e| self.error(e))?;
            if visit(&key, &value)? == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, mut ops: Vec<KvOp>) -> Result<(), Error> {
        let mut commits = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        let number = commits.0 + 1;
        ops.push(KvOp::Put(
            Space::Meta,
            crate::codec::COMMIT_SEQ_KEY.as_bytes().to_vec(),
            number.to_be_bytes().to_vec(),
        ));
        let ops = last_write_wins(ops);
        let mode = match self.durability {
            Durability::Fsync => PersistMode::SyncData,
            Durability::Buffered => PersistMode::Buffer,
        };
        let mut batch = self.db.batch().durability(Some(mode));
        for op in ops {
            match op {
                KvOp::Put(space, key, value) => batch.insert(self.keyspace(space), key, value),
                KvOp::Delete(space, key) => batch.remove(self.keyspace(space), key),
            }
        }
        batch.commit().map_err(|e| self.error(e))?;
        commits.0 = number;
        // Only what `fdatasync` made durable is marked: buffered commits may be lost with
        // the machine, and that is no damage.
        if self.durability == Durability::Fsync
            && let Err(error) = commits.1.write(number)
        {
            // The data is durable; only the check of a later open is weaker.
            tracing::warn!(%error, "cannot update the commit mark");
        }
        Ok(())
    }
}

/// Drops every operation that a later one on the same key overrides. fjall gives all
/// items of a batch one sequence number, so two items on one key would be ambiguous.
fn last_write_wins(ops: Vec<KvOp>) -> Vec<KvOp> {
    let mut seen: HashSet<(Space, &[u8])> = HashSet::with_capacity(ops.len());
    let keep: Vec<bool> = ops
        .iter()
        .rev()
        .map(|op| seen.insert(op.target()))
        .collect();
    if keep.iter().all(|keep| *keep) {
        return ops;
    }
    ops.into_iter()
        .zip(keep.into_iter().rev())
        .filter_map(|(op, keep)| keep.then_some(op))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_operations_on_a_key_win() {
        let ops = vec![
            KvOp::Put(Space::Meta, b"a".to_vec(), b"1".to_vec()),
            KvOp::Put(Space::Meta, b"b".to_vec(), b"1".to_vec()),
            KvOp::Delete(Space::Meta, b"a".to_vec()),
            KvOp::Put(Space::Inbox, b"a".to_vec(), b"2".to_vec()),
        ];
        let kept = last_write_wins(ops);
        assert_eq!(
            kept,
            vec![
                KvOp::Put(Space::Meta, b"b".to_vec(), b"1".to_vec()),
                KvOp::Delete(Space::Meta, b"a".to_vec()),
                KvOp::Put(Space::Inbox, b"a".to_vec(), b"2".to_vec()),
            ]
        );
    }
}
