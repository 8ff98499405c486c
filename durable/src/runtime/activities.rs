//! Running activities: each work item becomes a tokio task, bounded by a semaphore. The
//! result goes back, in memory, to the instance's shard, which commits it together with
//! the orchestrator's next turn — one fsync for "activity done" and "next step scheduled".
//! If the process dies first, the work item is still in the store and runs again at the
//! next start: activities run at least once.

use super::Shared;
use super::metrics::Metrics;
use super::shard::ShardMsg;
use durable_core::{ActivityContext, PayloadTooLarge, panic_message};
use durable_types::{ActivityWorkItem, Failure, FailureKind};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Starts `item` on the tokio runtime.
pub(crate) fn spawn(shared: &Arc<Shared>, item: ActivityWorkItem) {
    if shared.is_stopping() {
        // It stays in the store and runs after the next start.
        return;
    }
    let entry = shared.registry.activity(&item.name);
    let slots = Arc::clone(&shared.activity_slots);
    let shard = shared.shard_sender(&item.instance);
    let metrics = Arc::clone(&shared.metrics);
    let running = shared.running_activities.start();
    let limits = shared.config.limits;
    shared.tokio.spawn(async move {
        let _running = running;
        let Ok(_permit) = slots.acquire().await else {
            // The runtime is shutting down: the activity runs after the next start.
            return;
        };
        Metrics::add(&metrics.activities_started, 1);
        let key = item.key();
        let outcome = match entry {
            Some(entry) => {
                let ctx = ActivityContext::new(item.instance, item.execution, item.task, item.name.clone());
                match (CatchUnwind((entry.run)(ctx, item.input))).await {
                    Ok(Ok(output)) => limits
                        .check_payload(output.len(), || format!("output of activity `{}`", item.name))
                        .map(|()| output)
                        .map_err(PayloadTooLarge::into_failure),
                    Ok(Err(error)) => Err(error.into_failure()),
                    Err(panic) => Err(Failure::new(
                        FailureKind::Panic,
                        format!("activity `{}` panicked: {panic}", item.name),
                    )),
                }
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
        // A closed shard means the runtime stopped; the result is not committed and the
        // activity runs again after the next start.
        let _ = shard.send(ShardMsg::ActivityDone { key, outcome });
    });
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
