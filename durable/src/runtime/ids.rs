//! [`Ids`]: where the runtime's new numbers come from — inbox sequence numbers and
//! execution ids. Both are unique in the store and increasing, handed out in memory
//! (shards take them concurrently, without a store round trip) from where start-up found
//! the store.

use durable_types::{ExecutionId, InboxKey, InstanceId};
use std::sync::atomic::{AtomicU64, Ordering};

/// The next inbox sequence number and the next execution id.
#[derive(Debug)]
pub(crate) struct Ids {
    inbox_seq: AtomicU64,
    executions: AtomicU64,
}

impl Ids {
    /// Numbers after those the store holds: `next_inbox_seq` is the first free sequence
    /// number; `execution_floor` the highest execution id ever handed out.
    pub(crate) fn new(next_inbox_seq: u64, execution_floor: ExecutionId) -> Ids {
        Ids {
            inbox_seq: AtomicU64::new(next_inbox_seq),
            executions: AtomicU64::new(execution_floor.0 + 1),
        }
    }

    /// Hands out numbers from `floor` on, if the numbers are below it: a worker sharing a
    /// schema takes a new block when it takes partitions over, so that its numbers there
    /// follow those of their previous owners.
    #[cfg(feature = "postgres")]
    pub(crate) fn raise(&self, floor: u64) {
        self.inbox_seq.fetch_max(floor, Ordering::Relaxed);
        self.executions.fetch_max(floor, Ordering::Relaxed);
    }

    /// A new key for a message to `instance`, later than every stored one.
    pub(crate) fn inbox_key(&self, instance: &InstanceId) -> InboxKey {
        InboxKey {
            instance: instance.clone(),
            seq: self.inbox_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A new execution id, never handed out before in this store.
    pub(crate) fn execution(&self) -> ExecutionId {
        ExecutionId(self.executions.fetch_add(1, Ordering::Relaxed))
    }
}
