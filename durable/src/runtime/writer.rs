//! The writer: one thread that owns every store commit. It takes all commit requests
//! waiting at that moment — the turns of many instances, activity results, client
//! requests — merges them into one batch, commits it with one write and (by default) one
//! fsync, and only then performs what the requests asked to happen after their commit:
//! start activities, arm timers, deliver messages, answer clients.
//!
//! Nothing is dispatched before it is durable, so no activity runs for a turn that did not
//! commit, and no client hears "started" about an instance that a crash would lose.

use super::Shared;
use super::activities;
use super::handle::{Rejection, ReplySender};
use super::metrics::Metrics;
use super::room::{Place, Room};
use super::shard::ShardMsg;
use durable_store::WriteBatch;
use durable_types::{
    ActivityKey, ActivityWorkItem, ExecutionId, InboxKey, InboxMessage, InstanceId, TimerKey,
    TimerRecord,
};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

/// Bounds how much one commit carries, so one commit's latency stays bounded under load.
const MAX_OPS_PER_COMMIT: usize = 200_000;

/// What happens after a commit succeeds.
pub(crate) enum Dispatch {
    /// Run an activity.
    Activity(ActivityWorkItem),
    /// Arm a durable timer.
    Timer(TimerRecord),
    /// Forget a cancelled timer.
    CancelTimer(TimerKey),
    /// Tell a running (or waiting) activity the orchestration no longer wants it.
    CancelActivity(ActivityKey),
    /// Deliver a stored inbox message to its instance.
    Deliver(InboxKey, InboxMessage),
    /// Answer a client.
    Reply(ReplySender),
    /// Answer a client with a rejection (described by state this commit makes durable).
    Refuse(ReplySender, Rejection),
    /// Tell a shard its commits for these instances are durable.
    Committed {
        shard: usize,
        instances: Vec<InstanceId>,
    },
    /// Wake clients waiting for this instance to end.
    Ended(InstanceId),
    /// Tell whoever waits that every commit requested before this one is done.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Barrier(std::sync::mpsc::Sender<()>),
}

/// A batch to commit and what to do once it is durable.
pub(crate) struct CommitRequest {
    pub(crate) batch: WriteBatch,
    pub(crate) after: Vec<Dispatch>,
    /// The highest execution id the batch uses, if it starts executions.
    pub(crate) execution_floor: Option<ExecutionId>,
    /// The runtime's generation the request was made in: one made before a reset (see
    /// `runtime/ownership.rs`) is discarded.
    pub(crate) generation: u64,
    /// Rows of the `messages` table this commit consumes (workers sharing a schema).
    pub(crate) consume: Vec<(u16, i64)>,
}

/// Messages to the writer thread.
pub(crate) enum WriterMsg {
    Commit(CommitRequest),
    /// Commit everything queued so far, then exit.
    Stop,
}

/// The writer's queue: commit requests on their way to the writer, at most a `Room`'s
/// worth waiting. A shard that finds it full waits; the writer never waits on a shard.
#[derive(Clone)]
pub(crate) struct Queue {
    sender: Sender<Queued>,
    room: Arc<Room>,
}

/// A message in the writer's queue, holding its place until the writer takes it.
pub(crate) struct Queued {
    message: WriterMsg,
    _place: Option<Place>,
}

/// The writer's end of its queue. When the writer is gone, shards waiting for room are
/// released.
pub(crate) struct Inbox {
    receiver: Receiver<Queued>,
    room: Arc<Room>,
}

impl Queue {
    /// A queue with room for `capacity` commit requests.
    pub(crate) fn new(capacity: usize) -> (Queue, Inbox) {
        let (sender, receiver) = mpsc::channel();
        let room = Room::new(capacity);
        let inbox = Inbox {
            receiver,
            room: Arc::clone(&room),
        };
        (Queue { sender, room }, inbox)
    }

    /// Sends a commit request, waiting while the queue is full. `false` when the writer
    /// has stopped.
    pub(crate) fn commit(&self, request: CommitRequest) -> bool {
        let Some(place) = self.room.take_blocking() else {
            return false;
        };
        let queued = Queued {
            message: WriterMsg::Commit(request),
            _place: Some(place),
        };
        self.sender.send(queued).is_ok()
    }

    /// Tells the writer to commit what it has and exit; never waits.
    pub(crate) fn stop(&self) {
        let queued = Queued {
            message: WriterMsg::Stop,
            _place: None,
        };
        let _ = self.sender.send(queued);
    }
}

impl Inbox {
    fn recv(&self) -> Option<WriterMsg> {
        self.receiver.recv().ok().map(|queued| queued.message)
    }

    fn try_recv(&self) -> Option<WriterMsg> {
        self.receiver.try_recv().ok().map(|queued| queued.message)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.room.close();
    }
}

/// The writer thread's loop. Returns when told to stop or when every sender is gone.
pub(crate) fn run(shared: Arc<Shared>, inbox: Inbox) {
    let mut stopping = false;
    let mut floor = shared.initial_execution_floor;
    while !stopping {
        let Some(first) = inbox.recv() else {
            return;
        };
        let mut requests = Vec::new();
        let mut ops = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                WriterMsg::Commit(request) => {
                    ops += request.batch.len();
                    requests.push(request);
                }
                WriterMsg::Stop => stopping = true,
            }
            if ops >= MAX_OPS_PER_COMMIT {
                break;
            }
            // Empty or disconnected: commit what we have.
            next = inbox.try_recv();
        }
        if !requests.is_empty() {
            commit(&shared, requests, &mut floor);
        }
    }
}

fn commit(shared: &Arc<Shared>, requests: Vec<CommitRequest>, floor: &mut ExecutionId) {
    let count = requests.len() as u64;
    let mut merged = WriteBatch::new();
    let mut after = Vec::new();
    let mut consume = Vec::new();
    let mut highest = *floor;
    let generation = shared.ownership.generation();
    for mut request in requests {
        if request.generation != generation {
            discard(shared, request);
            continue;
        }
        merged.append(&mut request.batch);
        after.append(&mut request.after);
        consume.append(&mut request.consume);
        highest = highest.max(request.execution_floor.unwrap_or_default());
    }
    // Shards hand out execution ids concurrently and may commit them out of order; the
    // stored floor only ever rises.
    if highest > *floor {
        merged.set_execution_floor(highest);
    }
    let result = if shared.is_poisoned() {
        Err(Rejection::Poisoned)
    } else if let Some(cluster) = shared.cluster() {
        cluster_commit(shared, cluster, merged, &mut after, consume)
    } else {
        shared.store.commit(&merged).map_err(|error| {
            // What is on disk is now unknown: stop accepting work instead of guessing.
            tracing::error!(%error, "store commit failed; the runtime stops accepting work");
            shared.poison();
            Rejection::from(error)
        })
    };
    Metrics::add(&shared.metrics.commit_requests, count);
    match result {
        Ok(()) => {
            *floor = highest;
            Metrics::add(&shared.metrics.commits, 1);
            for dispatch in after {
                perform(shared, dispatch);
            }
        }
        Err(error) => {
            for dispatch in after {
                match dispatch {
                    Dispatch::Reply(reply) | Dispatch::Refuse(reply, _) => {
                        reply.send(Err(error.clone()));
                    }
                    // The shards' bookkeeping goes on, so nothing waits on a count that
                    // never drops.
                    committed @ Dispatch::Committed { .. } => perform(shared, committed),
                    barrier @ Dispatch::Barrier(_) => perform(shared, barrier),
                    _ => {}
                }
            }
        }
    }
}

fn perform(shared: &Arc<Shared>, dispatch: Dispatch) {
    match dispatch {
        Dispatch::Activity(item) => activities::spawn(shared, item),
        Dispatch::Timer(timer) => shared.timers.arm(timer),
        Dispatch::CancelTimer(key) => shared.timers.disarm(key),
        Dispatch::CancelActivity(key) => shared.activity_runs.cancel(&key),
        Dispatch::Deliver(key, message) => {
            let mailbox = shared.mailbox(&message.target);
            mailbox.post_now(ShardMsg::Inbox { key, message });
        }
        Dispatch::Reply(reply) => {
            reply.send(Ok(()));
        }
        Dispatch::Refuse(reply, error) => {
            reply.send(Err(error));
        }
        Dispatch::Committed { shard, instances } => {
            if let Some(mailbox) = shared.mailbox_at(shard) {
                mailbox.post_now(ShardMsg::Committed { instances });
            }
        }
        Dispatch::Ended(instance) => shared.watchers.notify(&instance),
        Dispatch::Barrier(done) => {
            let _ = done.send(());
        }
    }
}

/// A request made before the runtime's last reset: computed from state that never became
/// durable, so it is not committed; its clients hear why.
fn discard(shared: &Arc<Shared>, request: CommitRequest) {
    let error = Rejection::Moved;
    for dispatch in request.after {
        match dispatch {
            Dispatch::Reply(reply) | Dispatch::Refuse(reply, _) => reply.send(Err(error.clone())),
            barrier @ Dispatch::Barrier(_) => perform(shared, barrier),
            _ => {}
        }
    }
}

#[cfg(feature = "postgres")]
fn cluster_commit(
    shared: &Arc<Shared>,
    cluster: &super::cluster::Cluster,
    merged: WriteBatch,
    after: &mut Vec<Dispatch>,
    consume: Vec<(u16, i64)>,
) -> Result<(), Rejection> {
    cluster.commit(shared, merged, after, consume)
}

#[cfg(not(feature = "postgres"))]
fn cluster_commit(
    _: &Arc<Shared>,
    _: &std::convert::Infallible,
    _: WriteBatch,
    _: &mut Vec<Dispatch>,
    _: Vec<(u16, i64)>,
) -> Result<(), Rejection> {
    Ok(())
}
