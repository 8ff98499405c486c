//! The vocabulary of the `durable` runtime: identifiers (instances, executions, tasks,
//! entities), timestamps, JSON payloads, and the records the runtime keeps — history
//! events, instance records, inbox messages, activity work items, timers, entity records.
//!
//! This crate holds types and their serde shape only: no storage engine, no runtime. The
//! deterministic core, the stores, the runtime and the HTTP API all speak it, so none of
//! them needs another to name an `InstanceId`. The postcard encoding of these records is
//! the store's on-disk format (`durable-store`'s `FORMAT_VERSION`).

// Data from disk or the network never reaches `unwrap()`.
#![warn(clippy::unwrap_used)]

mod ids;
mod model;

pub use ids::{
    ENTITY_PART_MAX_LEN, EntityId, ExecutionId, INSTANCE_ID_MAX_LEN, InstanceId, InvalidInstanceId,
    Json, TaskId, Timestamp,
};
pub use model::{
    ActivityKey, ActivityWorkItem, Attempt, EntityCaller, EntityMessage, EntityRecord,
    FAILURE_CAUSES_MAX, Failure, FailureKind, HistoryEvent, InboxKey, InboxMessage, InstanceQuery,
    InstanceRecord, Message, ParentRef, RuntimeStatus, TimerKey, TimerPurpose, TimerRecord,
    decoding_causes,
};
