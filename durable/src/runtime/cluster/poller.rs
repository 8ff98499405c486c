//! The message thread of a worker sharing a schema: it waits for a notification (or a
//! short while), reads the `messages` rows of the partitions it owns and takes each up
//! once. An inbox message moves into the inbox with a fenced commit that also consumes
//! its row, and is delivered after it; a client's command goes to its shard carrying its
//! row, which the commit that answers it consumes.
//!
//! A row stays until a commit consumes it, so one being taken up is remembered and not
//! read twice; after a reset (see `mod.rs`) nothing is remembered and every row left is
//! taken up again.

use super::Cluster;
use super::wire::Envelope;
use crate::runtime::Shared;
use crate::runtime::handle::{RemoteRequest, ReplySender};
use crate::runtime::shard::ShardMsg;
use crate::runtime::writer::{CommitRequest, Dispatch};
use durable_store::{Horizon, Polled, WriteBatch};
use durable_types::InboxKey;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long the thread waits for a notification before it reads anyway (a notification
/// lost with a connection is found so).
const POLL_EVERY: Duration = Duration::from_millis(250);

/// How many rows one read takes.
const BATCH: usize = 1024;

/// Starts the message thread.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    cluster: &Arc<Cluster>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (shared, cluster) = (Arc::clone(shared), Arc::clone(cluster));
    std::thread::Builder::new()
        .name("durable-messages".into())
        .spawn(move || run(&shared, &cluster))
}

fn run(shared: &Arc<Shared>, cluster: &Cluster) {
    let engine = cluster.store.engine();
    // Rows being taken up, with the tenure of their partition when they were.
    let mut taken: HashMap<(u16, i64), u64> = HashMap::new();
    let mut generation = shared.ownership.generation();
    let mut full = false;
    loop {
        if cluster.is_stopped() || shared.is_stopping() {
            return;
        }
        if !full {
            engine.wait_for_messages(POLL_EVERY);
        }
        if shared.ownership.generation() != generation {
            generation = shared.ownership.generation();
            taken.clear();
        }
        let ownership = &shared.ownership;
        let owned_set = ownership.owned();
        // A row of a partition given up is the next owner's; if this worker gets the
        // partition back before that one took the row up, it takes it up again.
        taken.retain(|(partition, _), tenure| {
            owned_set.contains(*partition) && *tenure == ownership.tenure(*partition)
        });
        let owned: Vec<u16> = owned_set.iter().collect();
        if owned.is_empty() {
            full = false;
            continue;
        }
        let polled = match engine.poll_messages(&owned, &mut Horizon::default(), BATCH) {
            Ok(polled) => polled,
            Err(error) => {
                tracing::warn!(%error, "cannot read messages");
                std::thread::sleep(POLL_EVERY);
                continue;
            }
        };
        full = polled.len() == BATCH;
        if !full {
            // Every row still there was returned: the others were consumed.
            let present: HashSet<(u16, i64)> =
                polled.iter().map(|row| (row.partition, row.seq)).collect();
            taken.retain(|row, _| present.contains(row));
        }
        let fresh: Vec<Polled> = polled
            .into_iter()
            .filter(|row| {
                let tenure = ownership.tenure(row.partition);
                taken.insert((row.partition, row.seq), tenure).is_none()
            })
            .collect();
        take_up(shared, fresh, generation);
    }
}

/// Moves inbox messages into the inbox (one commit) and hands commands to their shards.
fn take_up(shared: &Shared, rows: Vec<Polled>, generation: u64) {
    let mut batch = WriteBatch::new();
    let mut after = Vec::new();
    let mut consume = Vec::new();
    for row in rows {
        match Envelope::decode(&row.body) {
            Ok(Envelope::Inbox {
                instance,
                seq,
                message,
            }) => {
                let key = InboxKey { instance, seq };
                batch.put_inbox(key.clone(), message.clone());
                after.push(Dispatch::Deliver(key, message));
                consume.push((row.partition, row.seq));
            }
            Ok(Envelope::Command { request, command }) => {
                let command: crate::client::Command = command.into();
                let reply = ReplySender::Remote(RemoteRequest {
                    partition: row.partition,
                    seq: row.seq,
                    request,
                    tenure: shared.ownership.tenure(row.partition),
                });
                let mailbox = shared.mailbox(&command.target());
                mailbox.post_blocking(ShardMsg::Command { command, reply });
            }
            Err(error) => {
                tracing::error!(target = %row.target, %error, "a message does not decode; it is dropped");
                consume.push((row.partition, row.seq));
            }
        }
    }
    if consume.is_empty() {
        return;
    }
    let request = CommitRequest {
        batch,
        after,
        execution_floor: None,
        generation,
        consume,
    };
    shared.writer.commit(request);
}
