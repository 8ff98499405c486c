//! The lease thread of a worker sharing a schema. Every quarter of the lease's time to
//! live it renews the leases held (a lease not renewed was taken over: its partitions are
//! dropped), records that the worker is alive and counts the live workers, gives up the
//! partitions beyond a fair share (`PARTITIONS` / live workers, rounded up) and takes free
//! ones up to it. A partition given up is handed over gracefully: the shards drop its
//! instances, the writer commits what it has, and only then is the lease released, so the
//! next owner can take it at once. A partition taken is read back from the store.

use super::Cluster;
use crate::runtime::Shared;
use crate::runtime::recovery;
use crate::runtime::shard::ShardMsg;
use crate::runtime::writer::{CommitRequest, Dispatch};
use durable_store::{Lease, PARTITIONS, PartitionSet, WriteBatch};
use std::sync::{Arc, PoisonError, mpsc};
use std::time::Duration;

/// How long a hand-over waits for the shards and the writer before releasing anyway.
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

/// Starts the lease thread.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    cluster: &Arc<Cluster>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (shared, cluster) = (Arc::clone(shared), Arc::clone(cluster));
    std::thread::Builder::new()
        .name("durable-leases".into())
        .spawn(move || run(&shared, &cluster))
}

/// The first round, before the runtime takes work: it starts with its share.
pub(crate) fn first_round(shared: &Arc<Shared>, cluster: &Cluster) {
    balance(shared, cluster);
}

fn run(shared: &Arc<Shared>, cluster: &Cluster) {
    let tick = cluster.ttl / 4;
    loop {
        let take_up_again = {
            let signals = cluster
                .signal
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (mut signals, _) = cluster
                .wake
                .wait_timeout_while(signals, tick, |signals| {
                    signals.take_up_again.is_empty() && !cluster.renewing_ended()
                })
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut signals.take_up_again)
        };
        if cluster.renewing_ended() || shared.is_poisoned() {
            return;
        }
        renew(shared, cluster);
        if cluster.is_stopped() {
            continue; // a graceful stop commits its last turns, under its leases
        }
        balance(shared, cluster);
        // A reset is this worker's own doing: nothing ended abruptly.
        take_up(shared, cluster, take_up_again, PartitionSet::default());
    }
}

fn held(cluster: &Cluster) -> Vec<Lease> {
    cluster
        .leases()
        .iter()
        .map(|(partition, epoch)| Lease {
            partition: *partition,
            epoch: *epoch,
        })
        .collect()
}

/// Renews the leases held; drops the partitions whose lease is gone.
fn renew(shared: &Shared, cluster: &Cluster) {
    let held = held(cluster);
    if held.is_empty() {
        return;
    }
    match cluster
        .store
        .engine()
        .renew(&cluster.worker, &held, cluster.ttl)
    {
        Ok(renewed) => {
            let lost: PartitionSet = held
                .iter()
                .filter(|lease| !renewed.contains(lease))
                .map(|lease| lease.partition)
                .collect();
            if !lost.is_empty() {
                tracing::warn!(partitions = ?lost.iter().collect::<Vec<_>>(), worker = %cluster.worker, "leases lost to another worker; their instances are dropped here");
                cluster.transition(|| cluster.lose(shared, lost));
                forget(shared, lost);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot renew the partition leases"),
    }
}

/// Moves towards a fair share: gives up partitions beyond it, takes free ones up to it.
fn balance(shared: &Arc<Shared>, cluster: &Cluster) {
    let engine = cluster.store.engine();
    let live = match engine.heartbeat(&cluster.worker, cluster.ttl) {
        Ok(live) => live,
        Err(error) => {
            tracing::warn!(%error, "cannot record this worker as alive");
            return;
        }
    };
    let share = usize::from(PARTITIONS).div_ceil(live);
    let owned = shared.ownership.owned();
    if owned.len() > share {
        let excess: PartitionSet = owned.iter().rev().take(owned.len() - share).collect();
        hand_over(shared, cluster, excess);
    } else if owned.len() < share {
        let free = match engine.free_partitions() {
            Ok(free) => free,
            Err(error) => {
                tracing::warn!(%error, "cannot read which partitions are free");
                return;
            }
        };
        acquire(shared, cluster, free, share - owned.len());
    }
}

/// Acquires up to `wanted` of the `free` partitions and takes them up.
fn acquire(shared: &Arc<Shared>, cluster: &Cluster, free: PartitionSet, wanted: usize) {
    let engine = cluster.store.engine();
    // Workers that start together try the free partitions from different places.
    let start = usize::from(
        cluster.worker.bytes().fold(0u16, |hash, byte| {
            hash.wrapping_mul(31).wrapping_add(u16::from(byte))
        }) % PARTITIONS,
    );
    let free: Vec<u16> = free.iter().collect();
    let mut taken = PartitionSet::default();
    let mut abrupt = PartitionSet::default();
    let mut leases = Vec::new();
    for offset in 0..free.len() {
        if taken.len() == wanted {
            break;
        }
        let partition = free[(start + offset) % free.len()];
        match engine.take_over(&cluster.worker, partition, cluster.ttl) {
            Ok(Some((lease, expired))) => {
                taken = taken.with(partition);
                if expired {
                    abrupt = abrupt.with(partition);
                }
                leases.push(lease);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot acquire a partition");
                break;
            }
        }
    }
    if taken.is_empty() {
        return;
    }
    // Ids above every one the partitions' previous owners handed out.
    match engine.id_block() {
        Ok(block) => shared.ids.raise(block),
        Err(error) => {
            tracing::warn!(%error, "cannot take a block of ids; the partitions are released");
            for lease in leases {
                let _ = engine.release(&cluster.worker, lease);
            }
            return;
        }
    }
    cluster
        .leases()
        .extend(leases.iter().map(|lease| (lease.partition, lease.epoch)));
    tracing::info!(partitions = ?taken.iter().collect::<Vec<_>>(), worker = %cluster.worker, "partitions acquired");
    take_up(shared, cluster, taken, abrupt);
}

/// Makes `partitions` (leased, not yet owned: nothing of them is in memory, and nothing
/// is delivered to them live) this worker's: reads back what is stored for them, hands the
/// stored messages to the shards and, in the same step as far as a reset can tell, starts
/// counting them as owned; then their activities run and their timers arm. Live messages
/// committed after the read reach the partitions through the `messages` table, so nothing
/// comes twice. The unfinished activities of the partitions whose previous owner ended
/// abruptly (`abrupt`: its lease expired) are counted by the poison-activity guard first,
/// as a start-up after a crash counts them. What cannot be read now is tried again.
fn take_up(
    shared: &Arc<Shared>,
    cluster: &Cluster,
    partitions: PartitionSet,
    abrupt: PartitionSet,
) {
    if partitions.is_empty() {
        return;
    }
    let again = |why: &str| {
        tracing::warn!(why, "cannot take partitions up now; trying again");
        let mut signals = cluster
            .signal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        signals.take_up_again = signals.take_up_again.union(partitions);
    };
    let mut found = match recovery::recover_partitions(&*shared.store, partitions) {
        Ok(found) => found,
        Err(error) => return again(&error.to_string()),
    };
    let counts = found.count_abrupt_end(abrupt, shared.config.max_activity_restarts);
    if !counts.is_empty() && !commit_and_wait(shared, counts) {
        return again("the poison-activity guard's counts were not committed");
    }
    cluster.transition(|| {
        // A lease lost meanwhile: its partition is the next owner's to take up.
        let leased: PartitionSet = cluster.leases().keys().copied().collect();
        let partitions = partitions.intersection(leased);
        found.retain(partitions);
        found.deliver_stored(shared);
        shared.ownership.add(partitions);
    });
    shared.timers.reset();
    shared.tokio.block_on(found.start_work(shared));
}

/// Commits `batch` through the writer (fenced like every commit); whether it landed.
fn commit_and_wait(shared: &Shared, batch: WriteBatch) -> bool {
    let (done, committed) = mpsc::channel();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = CommitRequest {
        batch,
        after: vec![
            Dispatch::Reply(crate::runtime::handle::ReplySender::Local(reply)),
            Dispatch::Barrier(done),
        ],
        execution_floor: None,
        generation: shared.ownership.generation(),
        consume: Vec::new(),
    };
    shared.writer.commit(request)
        && committed.recv_timeout(HAND_OVER_WAIT).is_ok()
        && matches!(answer.blocking_recv(), Ok(Ok(())))
}

/// The shards drop what they hold of `partitions`; returns once each has.
fn forget(shared: &Shared, partitions: PartitionSet) -> bool {
    let (done, acknowledged) = mpsc::channel();
    let mut shards = 0;
    while let Some(mailbox) = shared.mailbox_at(shards) {
        mailbox.post_now(ShardMsg::Forget {
            partitions,
            done: done.clone(),
        });
        shards += 1;
    }
    (0..shards).all(|_| acknowledged.recv_timeout(HAND_OVER_WAIT).is_ok())
}

/// Gives `partitions` up gracefully: stop running them, let the writer commit what it
/// has for them, then release their leases.
fn hand_over(shared: &Shared, cluster: &Cluster, partitions: PartitionSet) {
    cluster.transition(|| {
        shared
            .ownership
            .set(shared.ownership.owned().without(partitions));
    });
    let flushed = forget(shared, partitions) && {
        let (done, committed) = mpsc::channel();
        let request = CommitRequest {
            batch: WriteBatch::new(),
            after: vec![Dispatch::Barrier(done)],
            execution_floor: None,
            generation: shared.ownership.generation(),
            consume: Vec::new(),
        };
        shared.writer.commit(request) && committed.recv_timeout(HAND_OVER_WAIT).is_ok()
    };
    let engine = cluster.store.engine();
    let mut leases = cluster.leases();
    for partition in partitions.iter() {
        if let Some(epoch) = leases.remove(&partition)
            && flushed
        {
            // Unflushed, the lease is left to expire instead: a commit still on its way
            // lands first or is fenced.
            let _ = engine.release(&cluster.worker, Lease { partition, epoch });
        }
    }
    tracing::info!(partitions = ?partitions.iter().collect::<Vec<_>>(), worker = %cluster.worker, "partitions handed over");
}

/// A graceful stop: every lease is released and the worker leaves, so the others take
/// its partitions at their next round instead of after the leases expire. Called once
/// the writer has committed everything.
pub(crate) fn leave(cluster: &Cluster) {
    let engine = cluster.store.engine();
    for lease in held(cluster) {
        let _ = engine.release(&cluster.worker, lease);
    }
    cluster.leases().clear();
    let _ = engine.leave(&cluster.worker);
}
