//! The [`Store`] trait: what the runtime needs from durable storage.

use crate::batch::WriteBatch;
use crate::error::Error;
use durable_types::{
    ActivityKey, ActivityWorkItem, EntityId, EntityRecord, HistoryEvent, InboxKey, InboxMessage,
    InstanceQuery, InstanceRecord, TimerKey, TimerRecord,
};
use durable_types::{ExecutionId, InstanceId};

/// How a store makes a commit durable before [`Store::commit`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Write and `fdatasync`: a returned commit survives a power loss. The default.
    #[default]
    Fsync,
    /// Write to the operating system's buffers only: a returned commit survives a crash of
    /// the process, but the last moments before a power loss or kernel crash may be lost.
    Buffered,
}

impl Durability {
    /// The name used in logs and benchmark output.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Buffered => "buffered",
        }
    }
}

/// Durable storage for the runtime.
///
/// Methods block; the runtime calls them from its own writer thread and from blocking
/// tasks, never on an async worker. Implementations must be safe to call from several
/// threads at once; the runtime issues every [`Store::commit`] from one thread, in order.
///
/// # Contract
/// - [`Store::commit`] applies a whole batch atomically, or nothing, and returns only once
///   the batch is as durable as the store's [`Durability`] promises. Within a batch the later
///   of two operations on one key wins.
/// - After a commit fails, the store may refuse every later commit with [`Error::Poisoned`];
///   the runtime then stops and recovers from what is on disk at the next start.
/// - Reads see every commit that returned before the read began.
/// - Scans return records in key order, starting strictly after the given key.
/// - An undecodable record is [`Error::Corrupt`] naming the instance and, where the key
///   can be read, the record ([`crate::RecordKey`]) — never a panic.
///
/// `durable_store::conformance` (feature `conformance`) checks all of this.
pub trait Store: Send + Sync + 'static {
    /// A short name of the implementation, such as `"fjall"`.
    fn name(&self) -> &'static str;

    /// The durability of commits.
    fn durability(&self) -> Durability;

    /// Applies `batch` atomically and durably.
    ///
    /// # Errors
    /// Any store error; the batch then did not commit.
    fn commit(&self, batch: &WriteBatch) -> Result<(), Error>;

    /// The highest execution id recorded with [`WriteBatch::set_execution_floor`] (0 if
    /// none).
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn execution_floor(&self) -> Result<ExecutionId, Error>;

    /// Whether the last commit of [`WriteBatch::set_stopped_gracefully`] said `true`.
    ///
    /// # Errors
    /// Read errors.
    fn stopped_gracefully(&self) -> Result<bool, Error>;

    /// Reads one instance record.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, Error>;

    /// Reads several instance records at once (one round trip on a store across a
    /// network), in the order of `ids`. The outer error is a failed read; an inner one
    /// is that record's own (undecodable).
    ///
    /// # Errors
    /// Read errors.
    #[allow(clippy::type_complexity)]
    fn instances(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<Result<Option<InstanceRecord>, Error>>, Error> {
        Ok(ids.iter().map(|id| self.instance(id)).collect())
    }

    /// Reads the whole history of one execution, in order.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn history(&self, id: &InstanceId, execution: ExecutionId) -> Result<Vec<HistoryEvent>, Error>;

    /// Reads the inbox of one instance, in arrival order.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn inbox(&self, id: &InstanceId) -> Result<Vec<(InboxKey, InboxMessage)>, Error>;

    /// Reads up to `limit` inbox messages of one instance with sequence numbers after
    /// `after`, in arrival order.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn inbox_page(
        &self,
        id: &InstanceId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error>;

    /// Reads up to `limit` inbox messages of all instances after `after`, in key order.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn scan_inbox(
        &self,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error>;

    /// [`Store::scan_inbox`] of the instances of one partition (see
    /// [`partition_of`](crate::partition_of)): up to `limit` of their messages after
    /// `after`, in key order. A store that workers share reads only that partition's.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn scan_inbox_in(
        &self,
        partition: u16,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        filtered_pages(
            after.cloned(),
            limit,
            |after, limit| self.scan_inbox(after, limit),
            |(key, _)| key.clone(),
            |(key, _)| crate::partition_of(key.instance.as_str()) == partition,
        )
    }

    /// [`Store::scan_activities`] of the instances of one partition, as
    /// [`Store::scan_inbox_in`].
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn scan_activities_in(
        &self,
        partition: u16,
        after: Option<&ActivityKey>,
        limit: usize,
    ) -> Result<Vec<ActivityWorkItem>, Error> {
        filtered_pages(
            after.cloned(),
            limit,
            |after, limit| self.scan_activities(after, limit),
            |item| item.key(),
            |item| crate::partition_of(item.instance.as_str()) == partition,
        )
    }

    /// Reads one activity work item.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn activity(&self, key: &ActivityKey) -> Result<Option<ActivityWorkItem>, Error>;

    /// Reads up to `limit` activity work items after `after`, in key order.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn scan_activities(
        &self,
        after: Option<&ActivityKey>,
        limit: usize,
    ) -> Result<Vec<ActivityWorkItem>, Error>;

    /// Reads up to `limit` timers after `after`, earliest due first.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn scan_timers(
        &self,
        after: Option<&TimerKey>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, Error>;

    /// Reads one entity record.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn entity(&self, id: &EntityId) -> Result<Option<EntityRecord>, Error>;

    /// Reads up to `limit` entity records of type `name` (all types when `None`), with ids
    /// after `after`, in id order.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn list_entities(
        &self,
        name: Option<&str>,
        after: Option<&EntityId>,
        limit: usize,
    ) -> Result<Vec<EntityRecord>, Error>;

    /// Reads up to `limit` instance records that match `query`, with ids after `after`, in
    /// id order.
    ///
    /// # Errors
    /// Read errors and undecodable records.
    fn list_instances(
        &self,
        query: &InstanceQuery,
        after: Option<&InstanceId>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, Error>;
}

/// Up to `limit` records that `keep`, after `after` in key order, read from `scan` a page at
/// a time: the partition-scoped scans of a store that holds every partition itself.
fn filtered_pages<K, R>(
    mut after: Option<K>,
    limit: usize,
    scan: impl Fn(Option<&K>, usize) -> Result<Vec<R>, Error>,
    key: impl Fn(&R) -> K,
    keep: impl Fn(&R) -> bool,
) -> Result<Vec<R>, Error> {
    const PAGE: usize = 512;
    let mut kept = Vec::new();
    while kept.len() < limit {
        let page = scan(after.as_ref(), PAGE)?;
        let full = page.len() == PAGE;
        after = page.last().map(&key);
        kept.extend(page.into_iter().filter(&keep).take(limit - kept.len()));
        if !full {
            break;
        }
    }
    Ok(kept)
}
