//! Start-up: what a runtime finds in its store ([`Recovery`]) and how it takes it up again
//! ([`Recovery::resume`]). Every committed, unconsumed inbox message goes to its shard, in
//! arrival order; every unfinished activity runs again — unless it keeps being unfinished
//! when the process dies (it may be what kills it), then it fails. A record that does not
//! decode is stepped over so it cannot hide the others, and what it belonged to fails,
//! naming the damage. Timers are read by the timer service itself.
//!
//! ## The poison-activity guard
//! A process that dies leaves no word of why, so the guard counts circumstantial evidence,
//! in [`ActivityWorkItem::restarts`], without a write while activities run:
//! - A graceful stop leaves a mark in the store ([`mark_stopped_gracefully`]); the next
//!   start-up takes it away and counts nothing. Only abrupt ends (a crash, a kill) count.
//! - After an abrupt end, every unfinished activity that may have been running is counted.
//!   One found unfinished by [`ISOLATE_AFTER`] such start-ups is *isolated*: isolated
//!   activities run one at a time, in order of fewest counts, while everything else runs
//!   as usual. Of them, only the one that was running when the process died — the first
//!   one left in that order — is counted, so a poison activity no longer takes its
//!   neighbours down with it.
//! - Past `max_activity_restarts` counts an activity fails instead of running again.
//!
//! What it cannot tell: an activity that was running, alone, each time something else
//! killed the process (a deploy loop that does not stop the runtime gracefully, an OOM
//! killer aiming at another part of the process) looks exactly like one that kills it.
//! The first abrupt end of a fresh activity is not counted (nothing was written when it
//! started), and one that waited for a free slot when the process died counts as if it
//! ran.

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

impl Recovery {
    /// Nothing found: a worker sharing a schema reads each partition when it takes it.
    pub(crate) fn empty() -> Recovery {
        Recovery {
            inbox: Vec::new(),
            activities: Vec::new(),
            damaged_activities: Vec::new(),
            damaged_messages: Vec::new(),
            next_inbox_seq: 1,
            execution_floor: ExecutionId(0),
        }
    }
}

/// Reads every committed, unconsumed message and activity, counting (durably, before any
/// runs again) how the process ended against the activities it left unfinished.
pub(crate) fn recover(store: &dyn Store, max_restarts: u32) -> Result<Recovery, StoreError> {
    let (mut inbox, damaged_messages) = read_inbox(store, None)?;
    let (activities, damaged_activities) = read_activities(store, max_restarts)?;
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

/// Every stored inbox message (of one partition's instances, if given), and the keys of
/// those that do not decode.
fn read_inbox(
    store: &dyn Store,
    partition: Option<u16>,
) -> Result<(Messages, Vec<(InboxKey, String)>), StoreError> {
    let (mut inbox, mut damaged) = (Vec::new(), Vec::new());
    let mut after = None;
    loop {
        let page = scan_tolerant(
            after,
            PAGE,
            |after, limit| match partition {
                Some(partition) => store.scan_inbox_in(partition, after, limit),
                None => store.scan_inbox(after, limit),
            },
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

/// What a worker sharing a schema finds stored for `partitions` when it takes them up:
/// as at start-up, without the poison-activity guard's counts (see ARCHITECTURE.md).
#[cfg(feature = "postgres")]
pub(crate) fn recover_partitions(
    store: &dyn Store,
    partitions: durable_store::PartitionSet,
) -> Result<Recovery, StoreError> {
    let mut found = Recovery {
        inbox: Vec::new(),
        activities: Vec::new(),
        damaged_activities: Vec::new(),
        damaged_messages: Vec::new(),
        next_inbox_seq: 0,
        execution_floor: ExecutionId(0),
    };
    // Each partition's rows alone: a store that workers share reads no others.
    for partition in partitions.iter() {
        let (inbox, damaged_messages) = read_inbox(store, Some(partition))?;
        let (activities, damaged_activities) = read_stored_activities(store, Some(partition))?;
        found.inbox.extend(inbox);
        found.damaged_messages.extend(damaged_messages);
        found.activities.extend(activities);
        found.damaged_activities.extend(damaged_activities);
    }
    found.inbox.sort_by_key(|(key, _)| key.seq);
    // A damaged record another partition's scan stepped over is that partition's.
    found.retain(partitions);
    Ok(found)
}

#[cfg(feature = "postgres")]
impl Recovery {
    /// Counts, as [`take_stock`] does at a start-up after a crash, the unfinished
    /// activities of the `abrupt` partitions (their previous owner's lease expired);
    /// returns the batch that stores the counts, to commit before any runs again.
    pub(crate) fn count_abrupt_end(
        &mut self,
        abrupt: durable_store::PartitionSet,
        max_restarts: u32,
    ) -> WriteBatch {
        let mut batch = WriteBatch::new();
        if abrupt.is_empty() {
            return batch;
        }
        let (mut counted, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.activities)
            .into_iter()
            .partition(|item| abrupt.contains(durable_store::partition_of(item.instance.as_str())));
        for index in take_stock(&mut counted, max_restarts) {
            batch.put_activity(counted[index].clone());
        }
        self.activities = others;
        self.activities.append(&mut counted);
        batch
    }
}

/// Every stored activity work item, taken stock of (see [`take_stock`]) and stored so
/// before any runs again, and the keys of those that do not decode.
fn read_activities(
    store: &dyn Store,
    max_restarts: u32,
) -> Result<(Vec<ActivityWorkItem>, Damaged), StoreError> {
    let (mut activities, damaged) = read_stored_activities(store, None)?;
    let stopped_gracefully = store.stopped_gracefully()?;
    let changed = if stopped_gracefully {
        Vec::new()
    } else {
        take_stock(&mut activities, max_restarts)
    };
    for chunk in changed.chunks(PAGE) {
        let mut batch = WriteBatch::new();
        for &index in chunk {
            batch.put_activity(activities[index].clone());
        }
        store.commit(&batch)?;
    }
    if stopped_gracefully {
        // From here on, an end of the process is abrupt until a graceful stop says not.
        let mut batch = WriteBatch::new();
        batch.set_stopped_gracefully(false);
        store.commit(&batch)?;
    }
    Ok((activities, damaged))
}

/// Every stored activity work item (of one partition's instances, if given), and the keys
/// of those that do not decode.
fn read_stored_activities(
    store: &dyn Store,
    partition: Option<u16>,
) -> Result<(Vec<ActivityWorkItem>, Damaged), StoreError> {
    let (mut activities, mut damaged) = (Vec::new(), Vec::new());
    let mut after = None;
    loop {
        let page = scan_tolerant(
            after,
            PAGE,
            |after, limit| match partition {
                Some(partition) => store.scan_activities_in(partition, after, limit),
                None => store.scan_activities(after, limit),
            },
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
        activities.extend(page.records);
        damaged.extend(page.damaged);
        if !full {
            return Ok((activities, damaged));
        }
    }
}

/// How many start-ups after an abrupt end must find an activity unfinished before it runs
/// isolated.
pub(crate) const ISOLATE_AFTER: u32 = 2;

/// Counts, in `items` (the unfinished activities, in key order), the abrupt end of the
/// process that this start-up follows, as the module's guard describes; returns the
/// indices of the items it changed.
fn take_stock(items: &mut [ActivityWorkItem], max_restarts: u32) -> Vec<usize> {
    // The isolated activity that was running when the process died: the first of the
    // order they run in (fewest counts, then key), as nothing changed the counts since.
    // (One past the limit did not run: it was failed.)
    let running_isolated = items
        .iter()
        .enumerate()
        .filter(|(_, item)| item.isolated && item.restarts <= max_restarts)
        .min_by_key(|(index, item)| (item.restarts, *index))
        .map(|(index, _)| index);
    let mut changed = Vec::new();
    for (index, item) in items.iter_mut().enumerate() {
        if item.isolated && running_isolated != Some(index) {
            continue; // it waited its turn
        }
        item.restarts = item.restarts.saturating_add(1);
        item.isolated = item.restarts >= ISOLATE_AFTER;
        changed.push(index);
    }
    changed
}

/// Leaves the mark of a graceful stop, so that the next start-up does not count this stop
/// against the activities left unfinished. Called once nothing else writes to the store.
pub(crate) fn mark_stopped_gracefully(store: &dyn Store) -> Result<(), StoreError> {
    let mut batch = WriteBatch::new();
    batch.set_stopped_gracefully(true);
    store.commit(&batch)
}

impl Recovery {
    /// Takes up what was found: messages to their shards, activities to run (or to fail),
    /// damage reported to what it belonged to.
    pub(crate) async fn resume(mut self, shared: &Arc<Shared>) {
        for (key, message) in std::mem::take(&mut self.inbox) {
            let mailbox = shared.mailbox(&message.target);
            mailbox.post(ShardMsg::Stored { key, message }).await;
        }
        self.start_work(shared).await;
    }

    /// Keeps only what was found for `partitions`.
    #[cfg(feature = "postgres")]
    pub(crate) fn retain(&mut self, partitions: durable_store::PartitionSet) {
        let ours = |instance: &InstanceId| {
            partitions.contains(durable_store::partition_of(instance.as_str()))
        };
        self.inbox.retain(|(key, _)| ours(&key.instance));
        self.damaged_messages.retain(|(key, _)| ours(&key.instance));
        self.activities.retain(|item| ours(&item.instance));
        self.damaged_activities
            .retain(|(key, _)| ours(&key.instance));
    }

    /// Hands the stored messages found to their shards at once (a worker taking
    /// partitions over, before it counts them as its own: see `cluster/membership.rs`).
    #[cfg(feature = "postgres")]
    pub(crate) fn deliver_stored(&mut self, shared: &Shared) {
        for (key, message) in std::mem::take(&mut self.inbox) {
            shared
                .mailbox(&message.target)
                .post_now(ShardMsg::Stored { key, message });
        }
    }

    /// Takes up what was found besides messages: activities to run (or to fail), damage
    /// reported to what it belonged to.
    pub(crate) async fn start_work(self, shared: &Arc<Shared>) {
        let max_restarts = shared.config.max_activity_restarts;
        let mut isolated = Vec::new();
        for item in self.activities {
            if shared
                .activity_runs
                .adopt(&item, shared.ownership.generation())
            {
                continue; // a worker taking a partition up again: it runs already
            }
            if item.restarts > max_restarts {
                tracing::error!(
                    instance = %item.instance, activity = %item.name, restarts = item.restarts,
                    "the process ended abruptly {} times while this activity may have been running; it fails instead of running again",
                    item.restarts
                );
                let reason = format!(
                    "activity `{}` was running, or may have been, when the process ended abruptly {} times (max_activity_restarts = {max_restarts}); it may be what crashes the process, so it is not run again",
                    item.name, item.restarts
                );
                fail_activity(shared, item.key(), reason).await;
            } else if item.isolated {
                isolated.push(item);
            } else {
                activities::spawn(shared, item);
            }
        }
        if !isolated.is_empty() {
            // Fewest counts first (a stable sort keeps key order among equals): the order
            // the next start-up assumes when it blames the first one left.
            isolated.sort_by_key(|item| item.restarts);
            tracing::warn!(
                activities = isolated.len(),
                "activities that were unfinished at several abrupt ends of the process run one at a time, to tell which one ends it"
            );
            activities::spawn_isolated(shared, isolated);
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
    let generation = shared.ownership.generation();
    mailbox
        .post(ShardMsg::ActivityDone {
            key,
            outcome,
            generation,
        })
        .await;
}

/// Fails an orchestration's execution, from what is stored, without running its code.
async fn fail_instance(shared: &Shared, instance: InstanceId, reason: String) {
    let failure = Failure::new(FailureKind::Internal, reason);
    let mailbox = shared.mailbox(&instance);
    mailbox.post(ShardMsg::Damaged { instance, failure }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_types::{Json, TaskId};

    fn item(instance: &str, restarts: u32, isolated: bool) -> ActivityWorkItem {
        let mut item = ActivityWorkItem::new(
            InstanceId::new(instance).expect("valid id"),
            ExecutionId(1),
            TaskId(1),
            "work".into(),
            Json::null(),
            None,
        );
        item.restarts = restarts;
        item.isolated = isolated;
        item
    }

    fn counts(items: &[ActivityWorkItem]) -> Vec<(u32, bool)> {
        items.iter().map(|i| (i.restarts, i.isolated)).collect()
    }

    #[test]
    fn an_abrupt_end_counts_every_activity_that_ran_alongside_others() {
        let mut items = vec![item("a", 0, false), item("b", 1, false)];
        assert_eq!(take_stock(&mut items, 10), vec![0, 1]);
        // `b` was found unfinished after two abrupt ends: it runs isolated from now on.
        assert_eq!(counts(&items), vec![(1, false), (2, true)]);
    }

    #[test]
    fn of_the_isolated_only_the_one_that_was_running_is_counted() {
        // They ran one at a time, fewest counts first: `c` (2) was running, `b` waited.
        let mut items = vec![
            item("a", 0, false),
            item("b", 3, true),
            item("c", 2, true),
            item("d", 2, true),
        ];
        assert_eq!(take_stock(&mut items, 10), vec![0, 2]);
        assert_eq!(
            counts(&items),
            vec![(1, false), (3, true), (3, true), (2, true)]
        );
    }

    #[test]
    fn one_past_the_limit_did_not_run_and_is_not_blamed_again() {
        let mut items = vec![item("a", 4, true), item("b", 3, true)];
        assert_eq!(take_stock(&mut items, 3), vec![1]);
        assert_eq!(counts(&items), vec![(4, true), (4, true)]);
    }

    #[test]
    fn a_graceful_stop_is_not_counted_and_its_mark_is_taken_away() {
        let store = durable_store::MemoryStore::new();
        let mut batch = WriteBatch::new();
        batch.put_activity(item("a", 1, false));
        store.commit(&batch).expect("commit");
        mark_stopped_gracefully(&store).expect("mark");
        let (found, _) = read_activities(&store, 10).expect("read");
        assert_eq!(counts(&found), vec![(1, false)]);
        assert!(!store.stopped_gracefully().expect("read the mark"));
        // The next start-up follows an abrupt end again.
        let (found, _) = read_activities(&store, 10).expect("read");
        assert_eq!(counts(&found), vec![(2, true)]);
        let stored = store.scan_activities(None, 10).expect("scan");
        assert_eq!(counts(&stored), vec![(2, true)]);
    }
}
