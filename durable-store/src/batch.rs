//! [`WriteBatch`]: the unit of atomic commit. One orchestration turn, one activity result
//! or one client request becomes one batch; the runtime's writer merges the batches of
//! concurrent work into one commit.

use durable_types::{
    ActivityKey, ActivityWorkItem, EntityId, EntityRecord, HistoryEvent, InboxKey, InboxMessage,
    InstanceRecord, TimerKey, TimerRecord,
};
use durable_types::{ExecutionId, InstanceId};

/// One change in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace an instance record.
    PutInstance(InstanceRecord),
    /// Delete an instance record.
    DeleteInstance(InstanceId),
    /// Store one history event at `seq`.
    AppendHistory {
        /// The instance.
        instance: InstanceId,
        /// Its execution.
        execution: ExecutionId,
        /// The event's sequence number.
        seq: u64,
        /// The event.
        event: HistoryEvent,
    },
    /// Delete the history events `0..len` of one execution.
    DeleteHistory {
        /// The instance.
        instance: InstanceId,
        /// Its execution.
        execution: ExecutionId,
        /// How many events the execution has.
        len: u64,
    },
    /// Store an inbox message.
    PutInbox(InboxKey, InboxMessage),
    /// Delete a consumed inbox message.
    DeleteInbox(InboxKey),
    /// Store an activity work item.
    PutActivity(ActivityWorkItem),
    /// Delete an activity work item whose result is committed.
    DeleteActivity(ActivityKey),
    /// Store a timer.
    PutTimer(TimerRecord),
    /// Delete a timer that fired or was cancelled.
    DeleteTimer(TimerKey),
    /// Insert or replace an entity record.
    PutEntity(EntityRecord),
    /// Delete an entity record.
    DeleteEntity(EntityId),
    /// Record that execution ids up to this one have been handed out (the runtime starts
    /// above it after a restart).
    SetExecutionFloor(ExecutionId),
    /// Record (`true`) or clear (`false`) that the runtime over the store stopped
    /// gracefully.
    SetStoppedGracefully(bool),
}

/// Changes that commit together or not at all.
///
/// Within one batch, when two operations touch the same key, the later one wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Inserts or replaces an instance record.
    pub fn put_instance(&mut self, record: InstanceRecord) {
        self.ops.push(Op::PutInstance(record));
    }

    /// Deletes an instance record.
    pub fn delete_instance(&mut self, id: InstanceId) {
        self.ops.push(Op::DeleteInstance(id));
    }

    /// Stores a history event.
    pub fn append_history(
        &mut self,
        instance: InstanceId,
        execution: ExecutionId,
        seq: u64,
        event: HistoryEvent,
    ) {
        self.ops.push(Op::AppendHistory {
            instance,
            execution,
            seq,
            event,
        });
    }

    /// Deletes the first `len` history events of an execution.
    pub fn delete_history(&mut self, instance: InstanceId, execution: ExecutionId, len: u64) {
        self.ops.push(Op::DeleteHistory {
            instance,
            execution,
            len,
        });
    }

    /// Stores an inbox message.
    pub fn put_inbox(&mut self, key: InboxKey, message: InboxMessage) {
        self.ops.push(Op::PutInbox(key, message));
    }

    /// Deletes an inbox message.
    pub fn delete_inbox(&mut self, key: InboxKey) {
        self.ops.push(Op::DeleteInbox(key));
    }

    /// Stores an activity work item.
    pub fn put_activity(&mut self, item: ActivityWorkItem) {
        self.ops.push(Op::PutActivity(item));
    }

    /// Deletes an activity work item.
    pub fn delete_activity(&mut self, key: ActivityKey) {
        self.ops.push(Op::DeleteActivity(key));
    }

    /// Stores a timer.
    pub fn put_timer(&mut self, timer: TimerRecord) {
        self.ops.push(Op::PutTimer(timer));
    }

    /// Deletes a timer.
    pub fn delete_timer(&mut self, key: TimerKey) {
        self.ops.push(Op::DeleteTimer(key));
    }

    /// Inserts or replaces an entity record.
    pub fn put_entity(&mut self, record: EntityRecord) {
        self.ops.push(Op::PutEntity(record));
    }

    /// Deletes an entity record.
    pub fn delete_entity(&mut self, id: EntityId) {
        self.ops.push(Op::DeleteEntity(id));
    }

    /// Records that execution ids up to `execution` have been handed out.
    pub fn set_execution_floor(&mut self, execution: ExecutionId) {
        self.ops.push(Op::SetExecutionFloor(execution));
    }

    /// Records (`true`) or clears (`false`) that the runtime over the store stopped
    /// gracefully: the poison-activity guard does not count such a stop against the
    /// activities it left unfinished.
    pub fn set_stopped_gracefully(&mut self, stopped: bool) {
        self.ops.push(Op::SetStoppedGracefully(stopped));
    }

    /// Appends all of `other`'s operations after this batch's.
    pub fn append(&mut self, other: &mut WriteBatch) {
        self.ops.append(&mut other.ops);
    }

    /// The operations, in order, taken out of the batch.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl From<Vec<Op>> for WriteBatch {
    fn from(ops: Vec<Op>) -> WriteBatch {
        WriteBatch { ops }
    }
}
