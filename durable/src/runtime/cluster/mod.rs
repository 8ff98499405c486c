//! A worker among several sharing one PostgreSQL schema (feature `postgres`).
//!
//! The schema's instances are split into `PARTITIONS` partitions (by a hash of the id);
//! each is run by the one worker holding its lease, which has an epoch that grows at every
//! change of owner. Inside the partitions it owns a worker is the runtime of one process,
//! unchanged: shards with hot instances, one writer with group commit, activities and
//! timers in memory. What changes:
//! - Every commit is *fenced* ([`Cluster::commit`]): it names the partitions it touches,
//!   and PostgreSQL applies it only if this worker still holds each at its epoch, in the
//!   same transaction. A worker that lost a lease (paused, cut off, slow) applies nothing
//!   there; it then drops everything it holds in memory and takes up again, from the
//!   store, the partitions it still owns ([`Cluster::reset`]).
//! - A message to an instance of a partition this worker does not own is not put in the
//!   inbox but sent through the `messages` table with the same commit; the owner's poller
//!   (`poller.rs`) moves it into the inbox with a commit of its own and delivers it. A
//!   client's command for such an instance travels the same way, and its answer comes
//!   back through the `replies` table (`remote.rs`).
//! - The lease thread (`membership.rs`) renews the leases, counts the live workers, gives
//!   up partitions beyond a fair share and takes free ones up to it; a partition taken is
//!   read back from the store as a runtime reads everything at start-up.
//! - A commit whose connection failed around `COMMIT` is resolved, not guessed: the fenced
//!   partitions' rows record a token of each commit, read back once the database answers;
//!   until then the writer waits, and so does everything behind it.

mod membership;
mod poller;
pub(crate) mod remote;
pub(crate) mod wire;

use super::Shared;
use super::handle::{Rejection, ReplySender};
use super::shard::ShardMsg;
use super::writer::Dispatch;
use durable_store::{
    Commit, Error as StoreError, Lease, Op, Outgoing, PartitionSet, PostgresStore, WriteBatch,
    encode_batch, partition_of,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use wire::{Envelope, WireReply};

pub(crate) use membership::{first_round, leave, spawn as spawn_membership};
pub(crate) use poller::spawn as spawn_poller;

/// This worker's part in a shared schema.
pub(crate) struct Cluster {
    pub(crate) store: Arc<PostgresStore>,
    /// Unique among the schema's workers, past and present.
    pub(crate) worker: String,
    /// How long a lease lasts unrenewed.
    pub(crate) ttl: Duration,
    /// The epoch of each partition held.
    leases: Mutex<BTreeMap<u16, i64>>,
    tokens: AtomicI64,
    /// Wakes the lease thread early: to take partitions up again after a reset, or to
    /// stop.
    signal: Mutex<Signals>,
    wake: Condvar,
    /// The runtime stops: no more partitions are taken, no messages polled; leases are
    /// still renewed, so that the last commits of a graceful stop are not fenced.
    stopped: AtomicBool,
    /// The lease thread ends (before the leases are released, or for good).
    renewing_ended: AtomicBool,
    /// Held across each change of what this worker runs that must look atomic to the
    /// others: a reset (the writer) and the hand-off of a partition taken over to the
    /// shards (the lease thread). Never held while waiting for the writer or a shard.
    transition: Mutex<()>,
}

#[derive(Default)]
struct Signals {
    /// Partitions dropped from memory by a reset, to read back from the store.
    take_up_again: PartitionSet,
}

impl Cluster {
    pub(crate) fn new(store: Arc<PostgresStore>, ttl: Duration) -> Cluster {
        let id = uuid::Uuid::new_v4();
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let worker = format!("{host}:{}:{}", std::process::id(), id.simple());
        // Tokens only need to differ from the last one recorded in a partition's row.
        let seed = i64::from_le_bytes(id.as_bytes()[..8].try_into().unwrap_or_default());
        Cluster {
            store,
            worker,
            ttl,
            leases: Mutex::new(BTreeMap::new()),
            tokens: AtomicI64::new(seed & 0x3fff_ffff_ffff_ffff),
            signal: Mutex::new(Signals::default()),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
            renewing_ended: AtomicBool::new(false),
            transition: Mutex::new(()),
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, i64>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the message thread to end, and the lease thread to only renew from now on.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    /// Tells the lease thread to end.
    pub(crate) fn stop_renewing(&self) {
        self.stop();
        self.renewing_ended.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    fn renewing_ended(&self) -> bool {
        self.renewing_ended.load(Ordering::Acquire)
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Commits a merged batch for the writer, fenced by the partitions it touches;
    /// messages for other partitions' instances leave through the `messages` table, and
    /// remote requests answered in `after` are consumed and answered in the same
    /// transaction. Waits out a database that is away.
    pub(crate) fn commit(
        &self,
        shared: &Arc<Shared>,
        batch: WriteBatch,
        after: &mut Vec<Dispatch>,
        mut consume: Vec<(u16, i64)>,
    ) -> Result<(), Rejection> {
        let owned = shared.ownership.owned();
        let (ops, send, mut fence) = route(batch, owned);
        after.retain(|dispatch| match dispatch {
            Dispatch::Deliver(_, message) => owned.contains(partition_of(message.target.as_str())),
            _ => true,
        });
        let replies = remote_replies(after, &mut consume);
        for (partition, _) in &consume {
            fence = fence.with(*partition);
        }
        if ops.is_empty() && send.is_empty() && consume.is_empty() {
            return Ok(());
        }
        let fence = match self.fence(fence) {
            Ok(fence) => fence,
            Err(lost) => return Err(self.fenced(shared, lost)),
        };
        let batch = WriteBatch::from(ops);
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let mut delay = Duration::from_millis(10);
        loop {
            let commit = Commit {
                worker: &self.worker,
                fence: &fence,
                // Encoded per attempt: a retry (rare) encodes again rather than every
                // commit keeping a copy.
                ops: encode_batch(&batch),
                send: &send,
                consume: &consume,
                replies: &replies,
                token,
            };
            match self.store.engine().commit_fenced(commit) {
                Ok(()) => return Ok(()),
                Err(StoreError::Fenced { partitions }) => {
                    return Err(self.fenced(shared, partitions));
                }
                Err(StoreError::Unavailable(reason)) => {
                    tracing::warn!(%reason, "the database went away during a commit; waiting for it to find out whether the commit landed");
                    if self.await_outcome(shared, &fence, token, &mut delay)? {
                        return Ok(());
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "store commit failed; the runtime stops accepting work");
                    shared.poison();
                    return Err(Rejection::from(error));
                }
            }
        }
    }

    /// The leases of `partitions`, or the partitions among them this worker does not
    /// hold.
    fn fence(&self, partitions: PartitionSet) -> Result<Vec<Lease>, Vec<u16>> {
        let leases = self.leases();
        let lost: Vec<u16> = partitions
            .iter()
            .filter(|partition| !leases.contains_key(partition))
            .collect();
        if !lost.is_empty() {
            return Err(lost);
        }
        Ok(partitions
            .iter()
            .map(|partition| Lease {
                partition,
                epoch: leases[&partition],
            })
            .collect())
    }

    /// After a commit's connection failed: waits until the database answers whether the
    /// commit with `token` landed. `Err` when the runtime stops meanwhile.
    fn await_outcome(
        &self,
        shared: &Arc<Shared>,
        fence: &[Lease],
        token: i64,
        delay: &mut Duration,
    ) -> Result<bool, Rejection> {
        loop {
            std::thread::sleep(*delay);
            *delay = (*delay * 2).min(Duration::from_secs(1));
            let Some(first) = fence.first() else {
                // Nothing fenced (only messages sent): sending again is the safe side.
                return Ok(false);
            };
            match self.store.engine().committed(first.partition, token) {
                Ok(landed) => return Ok(landed),
                Err(error) if shared.is_stopping() => {
                    tracing::error!(%error, "the database is still away while the runtime stops; what the last commit did is found at the next start");
                    shared.poison();
                    return Err(Rejection::from(error));
                }
                Err(_) => {}
            }
        }
    }

    /// The commit was fenced: this worker lost `partitions`. Everything in memory may
    /// rest on writes that never landed, so it is all dropped and the partitions still
    /// owned are taken up again from the store.
    fn fenced(&self, shared: &Arc<Shared>, partitions: Vec<u16>) -> Rejection {
        tracing::warn!(?partitions, worker = %self.worker, "another worker took these partitions over; this worker drops its state and goes on with the partitions it still owns");
        self.transition(|| self.lose(shared, partitions.iter().copied().collect()));
        self.reset(shared);
        Rejection::Moved
    }

    /// Runs `change` as one transition (see the field).
    fn transition<T>(&self, change: impl FnOnce() -> T) -> T {
        let _held = self
            .transition
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        change()
    }

    /// Stops running `partitions` (their leases are gone).
    fn lose(&self, shared: &Shared, partitions: PartitionSet) {
        let mut leases = self.leases();
        for partition in partitions.iter() {
            leases.remove(&partition);
        }
        shared
            .ownership
            .set(shared.ownership.owned().without(partitions));
    }

    /// Drops everything held in memory (shards, timers) and starts a new generation; the
    /// lease thread takes every partition still owned up again. Until it has, they count
    /// as not owned, so nothing is delivered to them live while the store is read back
    /// (what is read back would come twice).
    pub(crate) fn reset(&self, shared: &Shared) {
        let _held = self
            .transition
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let dropped = shared.ownership.owned();
        shared.ownership.set(PartitionSet::default());
        // The shards hear of the new generation before the poller can see it, so nothing
        // it delivers again is dropped as belonging to the old one.
        let generation = shared.ownership.generation() + 1;
        for index in 0.. {
            let Some(mailbox) = shared.mailbox_at(index) else {
                break;
            };
            mailbox.post_now(ShardMsg::Reset { generation });
        }
        shared.timers.reset();
        shared.ownership.next_generation();
        let mut signals = self.signal.lock().unwrap_or_else(PoisonError::into_inner);
        signals.take_up_again = signals.take_up_again.union(dropped);
        self.wake.notify_all();
    }
}

/// Splits a batch: the changes to keep (everything but the store-wide marks, which
/// workers sharing a schema do not use, and inbox messages for partitions not owned),
/// the messages to send, and the partitions the changes touch.
fn route(batch: WriteBatch, owned: PartitionSet) -> (Vec<Op>, Vec<Outgoing>, PartitionSet) {
    let mut ops = Vec::with_capacity(batch.len());
    let mut send = Vec::new();
    let mut fence = PartitionSet::default();
    for op in batch.into_ops() {
        let partition = match &op {
            Op::SetExecutionFloor(_) | Op::SetStoppedGracefully(_) => continue,
            Op::PutInbox(key, message) => {
                let partition = partition_of(key.instance.as_str());
                if !owned.contains(partition) {
                    send.push(Outgoing {
                        partition,
                        target: key.instance.to_string(),
                        body: Envelope::inbox(key.clone(), message.clone()).encode(),
                    });
                    continue;
                }
                partition
            }
            op => op_partition(op),
        };
        fence = fence.with(partition);
        ops.push(op);
    }
    (ops, send, fence)
}

/// The partition of the instance whose data `op` changes.
fn op_partition(op: &Op) -> u16 {
    let instance = match op {
        Op::PutInstance(record) => &record.id,
        Op::DeleteInstance(id) => id,
        Op::AppendHistory { instance, .. } | Op::DeleteHistory { instance, .. } => instance,
        Op::PutInbox(key, _) | Op::DeleteInbox(key) => &key.instance,
        Op::PutActivity(item) => &item.instance,
        Op::DeleteActivity(key) => &key.instance,
        Op::PutTimer(timer) => &timer.instance,
        Op::DeleteTimer(key) => &key.instance,
        Op::PutEntity(record) => return partition_of(record.id.instance_id().as_str()),
        Op::DeleteEntity(id) => return partition_of(id.instance_id().as_str()),
        Op::SetExecutionFloor(_) | Op::SetStoppedGracefully(_) => return 0,
    };
    partition_of(instance.as_str())
}

/// The answers to remote requests among `after`, as `replies` rows; their `messages`
/// rows join `consume`.
fn remote_replies(after: &[Dispatch], consume: &mut Vec<(u16, i64)>) -> Vec<(i64, Vec<u8>)> {
    let mut replies = Vec::new();
    for dispatch in after {
        let (request, reply) = match dispatch {
            Dispatch::Reply(ReplySender::Remote(request)) => (request, Ok(())),
            Dispatch::Refuse(ReplySender::Remote(request), rejection) => {
                (request, Err(rejection.clone()))
            }
            _ => continue,
        };
        consume.push((request.partition, request.seq));
        replies.push((request.request, WireReply::encode(&reply)));
    }
    replies
}
