//! Running activities: each work item becomes a tokio task once one of the
//! `max_concurrent_activities` slots is free; until then it waits in a backlog. The
//! result goes back, in memory, to the instance's shard, which commits it together with
//! the orchestrator's next turn — one fsync for "activity done" and "next step scheduled".
//! If the process dies first, the work item is still in the store and runs again at the
//! next start: activities run at least once.
//!
//! Every run, waiting or running, has a [`Cancellation`] in [`Runs`]. An orchestration
//! that stops waiting for it (a lost race, a timeout, its end) cancels it: a waiting run
//! never starts, a running one is told to stop, and its result is not sent. Shutdown
//! cancels every run too, but a run cancelled by shutdown is only put off: a success is
//! still committed, anything else is dropped and the activity runs again at the next
//! start.

use super::Shared;
use super::metrics::Metrics;
use super::shard::ShardMsg;
use crate::registry::ActivityEntry;
use durable_core::{ActivityContext, Cancellation, Limits, PayloadTooLarge, panic_message};
use durable_types::{
    ActivityKey, ActivityWorkItem, ExecutionId, Failure, FailureKind, Json, TaskId,
};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError, oneshot};

/// Starts `item` on the tokio runtime if a slot is free; otherwise it joins the backlog,
/// which the backlog task runs in order as slots free up. A backlog costs its work items,
/// not a waiting task each.
pub(crate) fn spawn(shared: &Arc<Shared>, item: ActivityWorkItem) {
    if shared.is_stopping() {
        // It stays in the store and runs after the next start.
        return;
    }
    let cancellation = shared
        .activity_runs
        .register(&item, shared.ownership.generation());
    match Arc::clone(&shared.activity_slots).try_acquire_owned() {
        Ok(permit) => start(shared, item, cancellation, permit, None),
        Err(TryAcquireError::NoPermits) => {
            // A closed backlog means the runtime stopped; the item is in the store.
            let _ = shared.activity_backlog.send((item, cancellation));
        }
        // The runtime is shutting down: the activity runs after the next start.
        Err(TryAcquireError::Closed) => {}
    }
}

/// Runs the backlog: each item waits for a free slot, in arrival order (the semaphore
/// gives freed slots to the oldest waiter first). Ends when the runtime is gone or stops
/// giving out slots.
pub(crate) async fn run_backlog(
    shared: Weak<Shared>,
    mut backlog: UnboundedReceiver<(ActivityWorkItem, Cancellation)>,
) {
    while let Some((item, cancellation)) = backlog.recv().await {
        match wait_for_slot(&shared, &item, &cancellation).await {
            Slot::Free(shared, permit) => start(&shared, item, cancellation, permit, None),
            Slot::NotWanted => {}
            Slot::Stopping => return,
        }
    }
}

/// What a run that waited (in the backlog, or its isolated turn) gets.
enum Slot {
    /// A slot: it starts.
    Free(Arc<Shared>, OwnedSemaphorePermit),
    /// It was cancelled while it waited: it never starts.
    NotWanted,
    /// The runtime is stopping or gone: it runs after the next start.
    Stopping,
}

/// Waits for a free slot for `item`, unless nobody wants it any more.
async fn wait_for_slot(
    shared: &Weak<Shared>,
    item: &ActivityWorkItem,
    cancellation: &Cancellation,
) -> Slot {
    if cancellation.is_cancelled() {
        // Nobody waits for it any more (or the runtime is stopping): it never starts.
        if let Some(shared) = shared.upgrade() {
            shared.activity_runs.forget(&item.key());
        }
        return Slot::NotWanted;
    }
    let Some(slots) = shared
        .upgrade()
        .map(|shared| Arc::clone(&shared.activity_slots))
    else {
        return Slot::Stopping;
    };
    let Ok(permit) = slots.acquire_owned().await else {
        return Slot::Stopping; // the semaphore closes at shutdown
    };
    match shared.upgrade() {
        Some(shared) if !shared.is_stopping() => Slot::Free(shared, permit),
        _ => Slot::Stopping,
    }
}

/// Runs isolated activities (see the poison-activity guard in `recovery`) one at a time,
/// in the order given, each holding one of the usual slots.
pub(crate) fn spawn_isolated(shared: &Arc<Shared>, items: Vec<ActivityWorkItem>) {
    // Registered now, so that an orchestration can cancel one that waits its turn.
    let queue: Vec<_> = items
        .into_iter()
        .map(|item| {
            let cancellation = shared
                .activity_runs
                .register(&item, shared.ownership.generation());
            (item, cancellation)
        })
        .collect();
    shared
        .tokio
        .spawn(run_isolated(Arc::downgrade(shared), queue));
}

async fn run_isolated(shared: Weak<Shared>, queue: Vec<(ActivityWorkItem, Cancellation)>) {
    for (item, cancellation) in queue {
        let key = item.key();
        let (ended, run_ended) = oneshot::channel();
        match wait_for_slot(&shared, &item, &cancellation).await {
            Slot::Free(shared, permit) => start(&shared, item, cancellation, permit, Some(ended)),
            Slot::NotWanted => continue,
            Slot::Stopping => return,
        }
        // The sender is dropped when the run ends, however it ends.
        let _ = run_ended.await;
        until_gone_from_store(&shared, &key).await;
    }
}

/// Waits until the work item of a run that ended is gone from the store (its result is
/// committed), so that a crash in the next isolated run cannot be blamed on this one.
async fn until_gone_from_store(shared: &Weak<Shared>, key: &ActivityKey) {
    const POLL: Duration = Duration::from_millis(10);
    const PATIENCE: Duration = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.is_stopping() {
            return;
        }
        // Store reads block (a network round trip for some stores): off the async threads.
        let store = Arc::clone(&shared.store);
        let read_key = key.clone();
        let read = tokio::task::spawn_blocking(move || store.activity(&read_key))
            .await
            .unwrap_or_else(|join| Err(durable_store::Error::Backend(join.to_string())));
        match read {
            Ok(None) => return,
            Ok(Some(_)) if tokio::time::Instant::now() < deadline => {}
            Ok(Some(_)) => {
                tracing::warn!(
                    instance = %key.instance, task = key.task.0,
                    "the result of an isolated activity is still not committed after {PATIENCE:?}; the next isolated activity starts anyway"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(instance = %key.instance, %error, "cannot read an activity's work item");
                return;
            }
        }
        drop(shared);
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `item` holding `permit`, and sends its result to the instance's shard — unless
/// the run was cancelled meanwhile.
fn start(
    shared: &Arc<Shared>,
    item: ActivityWorkItem,
    cancellation: Cancellation,
    permit: OwnedSemaphorePermit,
    ended: Option<oneshot::Sender<()>>,
) {
    let entry = shared.registry.activity(&item.name);
    let mailbox = shared.mailbox(&item.instance).clone();
    let metrics = Arc::clone(&shared.metrics);
    let running = shared.running_activities.start();
    let limits = shared.config.limits;
    let runs = Arc::clone(&shared.activity_runs);
    shared.tokio.spawn(async move {
        let _running = running;
        let _ended = ended;
        Metrics::add(&metrics.activities_started, 1);
        let key = item.key();
        let outcome = match entry {
            Some(entry) => {
                let outcome = run(entry, item, cancellation, limits).await;
                // A panic was caught in this same poll, on this thread: log it here.
                crate::panics::log_caught(Some(key.instance.as_str()), None);
                outcome
            }
            None => Err(Failure::new(
                FailureKind::NotRegistered,
                format!(
                    "activity `{}` is not registered with this runtime; add `.register({})` to the runtime builder",
                    item.name, item.name
                ),
            )),
        };
        Metrics::add(&metrics.activities_completed, 1);
        // The slot goes first: the result waits for room in the shard's mailbox without
        // holding up other activities. (Once the runtime stopped, the result is not
        // committed and the activity runs again after the next start.)
        drop(permit);
        if let Some(generation) = runs.finish(&key, outcome.is_ok()) {
            let done = ShardMsg::ActivityDone {
                key,
                outcome,
                generation,
            };
            mailbox.post(done).await;
        }
    });
}

/// Runs an activity's code, with a panic and an oversized output as failures.
async fn run(
    entry: ActivityEntry,
    item: ActivityWorkItem,
    cancellation: Cancellation,
    limits: Limits,
) -> Result<Json, Failure> {
    let ctx = ActivityContext::new(item.instance, item.execution, item.task, item.name.clone())
        .with_retry(item.retry)
        .with_cancellation(cancellation);
    match CatchUnwind((entry.run)(ctx, item.input)).await {
        Ok(Ok(output)) => limits
            .check_payload(output.len(), || {
                format!("output of activity `{}`", item.name)
            })
            .map(|()| output)
            .map_err(PayloadTooLarge::into_failure),
        Ok(Err(error)) => Err(error.into_failure()),
        Err(panic) => Err(Failure::new(
            FailureKind::Panic,
            format!("activity `{}` panicked: {panic}", item.name),
        )),
    }
}

/// Polls a future, turning a panic into `Err(message)`.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
    }
}

/// The runs not finished, waiting or running: what a cancellation reaches. Every activity
/// passes through here twice, so a run is known by its execution and task alone — unique
/// in a store, as execution ids are — which hash cheaply and need no copy of the instance
/// id.
#[derive(Default)]
pub(crate) struct Runs {
    by_run: Mutex<HashMap<RunId, Run, BuildHasherDefault<RunIdHasher>>>,
}

/// One unfinished run: how to cancel it, and the runtime's generation its result belongs
/// to (a result of an earlier generation is dropped: see `runtime/ownership.rs`).
struct Run {
    cancellation: Cancellation,
    generation: u64,
}

/// An activity run's execution and task.
type RunId = (ExecutionId, TaskId);

fn run_id(key: &ActivityKey) -> RunId {
    (key.execution, key.task)
}

/// A multiply-rotate hash (as rustc's FxHash) for [`RunId`]s: the runtime hands out both
/// numbers, so no input can be chosen to collide, and std's SipHash costs more than the
/// map operation around it.
#[derive(Default)]
struct RunIdHasher(u64);

impl Hasher for RunIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Runs {
    fn register(&self, item: &ActivityWorkItem, generation: u64) -> Cancellation {
        let cancellation = Cancellation::new();
        let run = Run {
            cancellation: cancellation.clone(),
            generation,
        };
        self.lock().insert((item.execution, item.task), run);
        cancellation
    }

    /// Whether a run of `item` is under way (or waiting for a slot); if so, its result
    /// now belongs to `generation` (a worker taking its partition up again after a reset
    /// keeps the run rather than starting another).
    pub(crate) fn adopt(&self, item: &ActivityWorkItem, generation: u64) -> bool {
        match self.lock().get_mut(&(item.execution, item.task)) {
            Some(run) => {
                run.generation = generation;
                true
            }
            None => false,
        }
    }

    fn forget(&self, key: &ActivityKey) {
        self.lock().remove(&run_id(key));
    }

    /// The run of `key` ended, successfully or not: whether its result is still wanted.
    /// A run the orchestration cancelled is gone from the map; one cancelled by shutdown
    /// keeps a success, and drops anything else (likely its reaction to the cancellation)
    /// so that it runs again at the next start.
    fn finish(&self, key: &ActivityKey, succeeded: bool) -> Option<u64> {
        let run = self.lock().remove(&run_id(key))?;
        (succeeded || !run.cancellation.is_cancelled()).then_some(run.generation)
    }

    /// The orchestration no longer waits for `key`: a waiting run never starts, a running
    /// one is told to stop, and its result is dropped.
    pub(crate) fn cancel(&self, key: &ActivityKey) {
        if let Some(run) = self.lock().remove(&run_id(key)) {
            run.cancellation.cancel();
        }
    }

    /// The runtime is stopping: every run is told to stop.
    pub(crate) fn cancel_all(&self) {
        for run in self.lock().values() {
            run.cancellation.cancel();
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<RunId, Run, BuildHasherDefault<RunIdHasher>>> {
        self.by_run.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
