//! Purging an ended instance: its history, its record and whatever is left in its inbox
//! go in one commit. A lock grant among the leftovers holds locks nobody will release, so
//! they are released.

use super::slot::{Kind, Loaded, Slot};
use super::turn::release_locks;
use super::writes::{Env, Writes};
use crate::runtime::handle::Rejection;
use durable_types::{EntityCaller, HistoryEvent, InstanceId, Message};

/// What becomes of a purge.
pub(crate) enum Purge {
    /// Not now: the instance has inputs waiting or commits in flight. It is tried again
    /// after them.
    Later,
    /// Refused, at once (nothing was written).
    Refused(Rejection),
    /// These writes delete the instance; the client hears once they are durable.
    Purged(Writes),
}

/// Purges `instance`; `busy` says it has writes pending in the current round.
pub(crate) fn purge(slot: &mut Slot, instance: &InstanceId, busy: bool, env: &Env) -> Purge {
    let Kind::Orchestration(orchestration) = &mut slot.kind else {
        return Purge::Refused(Rejection::NotFound);
    };
    if !orchestration.record.is_loaded() {
        orchestration.record = match env.store.instance(instance) {
            Ok(Some(record)) => Loaded::Present(record),
            Ok(None) => Loaded::Absent,
            Err(error) => return Purge::Refused(Rejection::from(error)),
        };
    }
    // After its pending writes, including this round's: the next round comes with the
    // commit's `Committed` message.
    if slot.inflight > 0 || !slot.inputs.is_empty() || busy {
        return Purge::Later;
    }
    let record = match orchestration.record.record() {
        None => return Purge::Refused(Rejection::NotFound),
        Some(record) if !record.status.is_terminal() => {
            let status = record.status;
            return Purge::Refused(Rejection::NotEnded { status });
        }
        Some(record) => record,
    };
    let mut writes = Writes::default();
    writes
        .batch
        .delete_history(instance.clone(), record.execution, record.history_len);
    writes.batch.delete_instance(instance.clone());
    delete_leftovers(instance, env, &mut writes);
    Purge::Purged(writes)
}

/// Deletes what waits in the instance's inbox, releasing the locks of a grant among it.
fn delete_leftovers(instance: &InstanceId, env: &Env, writes: &mut Writes) {
    let leftovers = match env.store.inbox(instance) {
        Ok(leftovers) => leftovers,
        Err(error) => {
            tracing::warn!(%instance, %error, "cannot read the inbox to purge");
            return;
        }
    };
    for (key, message) in leftovers {
        if let Message::Event {
            execution: Some(execution),
            event: HistoryEvent::LocksGranted { id, entities },
        } = &message.body
        {
            let holder = EntityCaller {
                instance: instance.clone(),
                execution: *execution,
                task: *id,
            };
            release_locks(&holder, entities, env, writes);
        }
        writes.batch.delete_inbox(key);
    }
}
