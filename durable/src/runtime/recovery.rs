//! Start-up: what a runtime finds in its store ([`Recovery`]) and how it takes it up again
//! ([`Recovery::resume`]). Every committed, unconsumed inbox message goes to its shard, in
//! arrival order; every unfinished activity runs again — unless start-ups keep finding it
//! unfinished (it may be what crashes the process), then it fails. A record that does not
//! decode is stepped over so it cannot hide the others, and what it belonged to fails,
//! naming the damage. Timers are read by the timer service itself.

use super::Shared;
use super::activities;
use super::scan::scan_tolerant;
use super::shard::ShardMsg;
use durable_store::{Error as StoreError, RecordKey, Store, WriteBatch};
use durable_types::{
    ActivityKey, ActivityWorkItem, ExecutionId, Failure, FailureKind, InboxKey, InboxMessage,
    InstanceId,
};
use std::sync::Arc;

/// How many records one start-up read takes at a time.
const PAGE: usize = 4096;

/// What start-up found in the store.
pub(crate) struct Recovery {
    inbox: Vec<(InboxKey, InboxMessage)>,
    activities: Vec<ActivityWorkItem>,
    /// Work items whose value cannot be decoded: their activities fail, naming the damage.
    damaged_activities: Vec<(ActivityKey, StoreError)>,
    /// Inbox messages whose value cannot be decoded: their orchestrations fail, naming
    /// the damage (what the message said is lost).
    damaged_messages: Vec<(InboxKey, String)>,
    /// The first inbox sequence number not in use.
    pub(crate) next_inbox_seq: u64,
    /// The highest execution id ever handed out.
    pub(crate) execution_floor: ExecutionId,
}

/// Reads every committed, unconsumed message and activity, counting (durably, before any
/// runs again) that this start-up found each activity unfinished.
pub(crate) fn recover(store: &dyn Store) -> Result<Recovery, StoreError> {
    let (mut inbox, damaged_messages) = read_inbox(store)?;
    let (activities, damaged_activities) = read_activities(store)?;
    let next_inbox_seq = inbox
        .iter()
        .map(|(key, _)| key.seq)
        .max()
        .map_or(1, |max| max + 1);
    // Deliver in arrival order across instances, as they were sent.
    inbox.sort_by_key(|(key, _)| key.seq);
    Ok(Recovery {
        inbox,
        activities,
        damaged_activities,
        damaged_messages,
        next_inbox_seq,
        execution_floor: store.execution_floor()?,
    })
}

type Messages = Vec<(InboxKey, InboxMessage)>;

/// Every stored inbox message, and the keys of those that do not decode.
fn read_inbox(store: &dyn Store) -> Result<(Messages, Vec<(InboxKey, String)>), StoreError> {
    let (mut inbox, mut damaged) = (Vec::new(), Vec::new());
    let mut after = None;
    loop {
        let page = scan_tolerant(
            after,
            PAGE,
            |after, limit| store.scan_inbox(after, limit),
            |(key, _)| key.clone(),
            |error| match error {
                StoreError::Corrupt {
                    key: Some(RecordKey::Inbox(key)),
                    ..
                } => Some(key.clone()),
                _ => None,
            },
        )?;
        let full = page.is_full(PAGE);
        damaged.extend(
            page.damaged
                .into_iter()
                .map(|(key, e)| (key, e.to_string())),
        );
        inbox.extend(page.records);
        if !full {
            return Ok((inbox, damaged));
        }
        after = page.last;
    }
}

type Damaged = Vec<(ActivityKey, StoreError)>;

/// Every stored activity work item with its restart count raised (and stored), and the
/// keys of those that do not decode.
fn read_activities(store: &dyn Store) -> Result<(Vec<ActivityWorkItem>, Damaged), StoreError> {
    let (mut activities, mut damaged) = (Vec::new(), Vec::new());
    let mut after = None;
    loop {
        let page = scan_tolerant(
            after,
            PAGE,
            |after, limit| store.scan_activities(after, limit),
            ActivityWorkItem::key,
            |error| match error {
                StoreError::Corrupt {
                    key: Some(RecordKey::Activity(key)),
                    ..
                } => Some(key.clone()),
                _ => None,
            },
        )?;
        let full = page.is_full(PAGE);
        after = page.last;
        // This start-up found them unfinished: count it, durably, before any runs again.
        let mut counted = WriteBatch::new();
        for mut item in page.records {
            item.restarts = item.restarts.saturating_add(1);
            counted.put_activity(item.clone());
            activities.push(item);
        }
        if !counted.is_empty() {
            store.commit(&counted)?;
        }
        damaged.extend(page.damaged);
        if !full {
            return Ok((activities, damaged));
        }
    }
}

impl Recovery {
    /// Takes up what was found: messages to their shards, activities to run (or to fail),
    /// damage reported to what it belonged to.
    pub(crate) async fn resume(self, shared: &Arc<Shared>) {
        for (key, message) in self.inbox {
            let mailbox = shared.mailbox(&message.target);
            mailbox.post(ShardMsg::Inbox { key, message }).await;
        }
        let max_restarts = shared.config.max_activity_restarts;
        for item in self.activities {
            if item.restarts <= max_restarts {
                activities::spawn(shared, item);
                continue;
            }
            tracing::error!(
                instance = %item.instance, activity = %item.name, restarts = item.restarts,
                "an activity was unfinished at {} start-ups in a row; it fails instead of running again",
                item.restarts
            );
            let reason = format!(
                "activity `{}` was found unfinished by {} start-ups of the runtime in a row (max_activity_restarts = {max_restarts}); it may be crashing the process, so it is not run again",
                item.name, item.restarts
            );
            fail_activity(shared, item.key(), reason).await;
        }
        for (key, error) in self.damaged_messages {
            tracing::error!(
                instance = %key.instance, %error,
                "a stored message of this instance is damaged and cannot be delivered"
            );
            let reason = format!(
                "a message stored for this instance is damaged and cannot be delivered, so it cannot go on correctly (restore the store from a backup to recover it): {error}"
            );
            fail_instance(shared, key.instance, reason).await;
        }
        for (key, error) in self.damaged_activities {
            tracing::error!(
                instance = %key.instance, %error,
                "an activity's stored work item is damaged; the activity fails instead of running"
            );
            let reason = format!(
                "the stored work item of this activity is damaged and cannot be run: {error}"
            );
            fail_activity(shared, key, reason).await;
        }
    }
}

/// Fails an activity without running it: its orchestration gets the failure as the
/// activity's result.
async fn fail_activity(shared: &Shared, key: ActivityKey, reason: String) {
    let outcome = Err(Failure::new(FailureKind::Internal, reason));
    let mailbox = shared.mailbox(&key.instance);
    mailbox.post(ShardMsg::ActivityDone { key, outcome }).await;
}

/// Fails an orchestration's execution, from what is stored, without running its code.
async fn fail_instance(shared: &Shared, instance: InstanceId, reason: String) {
    let failure = Failure::new(FailureKind::Internal, reason);
    let mailbox = shared.mailbox(&instance);
    mailbox.post(ShardMsg::Damaged { instance, failure }).await;
}
