//! Storage for the `durable` runtime: the records it persists, the [`Store`] trait it
//! needs, one codec, and two embedded stores — [`FjallStore`] (the default, on disk) and
//! [`MemoryStore`] (for tests).
//!
//! The storage contract (key layout, record encoding, commit protocol, fsync assumptions,
//! format version) is written down in `ARCHITECTURE.md` at the repository root and in
//! [`codec`]. Every store must pass the same `conformance` suite (feature
//! `conformance`); `faults` (feature `testing`) wraps a store or an engine to fail chosen
//! calls.
//!
//! Records are encoded with postcard, whose 1.x wire format is frozen and documented —
//! durable data needs that. (bincode is not an option: its last release is a compile-error
//! tombstone and 2.x is unmaintained.) Payloads inside records — inputs, outputs, event
//! data — are JSON text, so tools and the HTTP API can show them.

// Data from disk or the network never reaches `unwrap()`.
#![warn(clippy::unwrap_used)]

pub mod codec;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
pub mod faults;

mod batch;
mod error;
mod fjall_store;
mod kv;
mod memory;
pub mod partition;
#[cfg(feature = "postgres")]
mod postgres;
mod store;

pub use batch::{Op, WriteBatch};
pub use error::{Error, RecordKey};
pub use fjall_store::{COMMIT_MARK_FILE, FjallEngine, FjallStore};
pub use kv::{FORMAT_VERSION, KvEngine, KvOp, KvStore, Scan, Visitor, encode_batch};
pub use memory::{MemoryEngine, MemoryStore};
pub use partition::{PARTITIONS, PartitionSet, partition_of};
#[cfg(feature = "postgres")]
pub use postgres::{Commit, Horizon, Lease, Outgoing, Polled, PostgresEngine, PostgresStore};
// The records this crate stores, from `durable-types`, so that a store's users need
// name only this crate.
pub use durable_types::{
    ActivityKey, ActivityWorkItem, EntityCaller, EntityId, EntityMessage, EntityRecord,
    ExecutionId, FAILURE_CAUSES_MAX, Failure, FailureKind, HistoryEvent, INSTANCE_ID_MAX_LEN,
    InboxKey, InboxMessage, InstanceId, InstanceQuery, InstanceRecord, InvalidInstanceId, Json,
    Message, ParentRef, RuntimeStatus, TaskId, TimerKey, TimerPurpose, TimerRecord, Timestamp,
};
pub use store::{Durability, Store};
