//! Running activities: each work item becomes a tokio task once one of the
//! `max_concurrent_activities` slots is free; until then it waits in a backlog. The
//! result goes back, in memory, to the instance's shard, which commits it together with
//! the orchestrator's next turn — one fsync for "activity done" and "next step scheduled".
//! If the process dies first, the work item is still in the store and runs again at the
//! next start: activities run at least once.

use super::Shared;
use super::metrics::Metrics;
use super::shard::ShardMsg;
use crate::registry::ActivityEntry;
use durable_core::{ActivityContext, Limits, PayloadTooLarge, panic_message};
use durable_types::{ActivityWorkItem, Failure, FailureKind, Json};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};

/// Starts `item` on the tokio runtime if a slot is free; otherwise it joins the backlog,
/// which the backlog task runs in order as slots free up. A backlog costs its work items,
/// not a waiting task each.
pub(crate) fn spawn(shared: &Arc<Shared>, item: ActivityWorkItem) {
    if shared.is_stopping() {
        // It stays in the store and runs after the next start.
        return;
    }
    match Arc::clone(&shared.activity_slots).try_acquire_owned() {
        Ok(permit) => start(shared, item, permit),
        Err(TryAcquireError::NoPermits) => {
            // A closed backlog means the runtime stopped; the item is in the store.
            let _ = shared.activity_backlog.send(item);
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
    mut backlog: UnboundedReceiver<ActivityWorkItem>,
) {
    while let Some(item) = backlog.recv().await {
        let Some(slots) = shared
            .upgrade()
            .map(|shared| Arc::clone(&shared.activity_slots))
        else {
            return;
        };
        let Ok(permit) = slots.acquire_owned().await else {
            return; // shutting down: the rest runs after the next start
        };
        match shared.upgrade() {
            Some(shared) if !shared.is_stopping() => start(&shared, item, permit),
            _ => return,
        }
    }
}

/// Runs `item` holding `permit`, and sends its result to the instance's shard.
fn start(shared: &Arc<Shared>, item: ActivityWorkItem, permit: OwnedSemaphorePermit) {
    let entry = shared.registry.activity(&item.name);
    let mailbox = shared.mailbox(&item.instance).clone();
    let metrics = Arc::clone(&shared.metrics);
    let running = shared.running_activities.start();
    let limits = shared.config.limits;
    shared.tokio.spawn(async move {
        let _running = running;
        Metrics::add(&metrics.activities_started, 1);
        let key = item.key();
        let outcome = match entry {
            Some(entry) => run(entry, item, limits).await,
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
        mailbox.post(ShardMsg::ActivityDone { key, outcome }).await;
    });
}

/// Runs an activity's code, with a panic and an oversized output as failures.
async fn run(
    entry: ActivityEntry,
    item: ActivityWorkItem,
    limits: Limits,
) -> Result<Json, Failure> {
    let ctx = ActivityContext::new(item.instance, item.execution, item.task, item.name.clone());
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
