//! [`ActivityContext`]: what an activity knows about the task it runs for — which call and
//! attempt it is, the key that makes its side effects idempotent, and whether it is still
//! wanted ([`Cancellation`]).

use durable_types::{Attempt, ExecutionId, InstanceId, TaskId};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// The context of one activity execution.
///
/// Activities run at least once: after a crash, an activity whose result was not yet
/// committed runs again. [`ActivityContext::idempotency_key`] is the same for every run of
/// one call — across crashes and across the attempts of a retried call — so an activity
/// can make its side effects idempotent with it.
///
/// ```
/// use durable::ActivityContext;
/// use durable::store::{ExecutionId, InstanceId, TaskId};
///
/// // Activities are plain async functions: call one with a context of your own to test it.
/// let ctx = ActivityContext::new(InstanceId::new("order-1")?, ExecutionId(7), TaskId(2), "charge");
/// assert_eq!(ctx.idempotency_key(), "order-1:7:2");
/// assert_eq!(ctx.attempt(), 1);
/// assert!(!ctx.is_cancelled());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ActivityContext {
    instance: InstanceId,
    execution: ExecutionId,
    task: TaskId,
    name: String,
    retry: Option<Attempt>,
    cancellation: Cancellation,
}

impl ActivityContext {
    /// The context of task `task` of an execution: a first attempt, not cancelled. Public
    /// so activities can be unit-tested by calling them directly.
    pub fn new(
        instance: InstanceId,
        execution: ExecutionId,
        task: TaskId,
        name: impl Into<String>,
    ) -> ActivityContext {
        ActivityContext {
            instance,
            execution,
            task,
            name: name.into(),
            retry: None,
            cancellation: Cancellation::new(),
        }
    }

    /// The same context for a retry: attempt `retry.number` of the call whose first
    /// attempt was task `retry.first`.
    #[must_use]
    pub fn with_retry(mut self, retry: Option<Attempt>) -> ActivityContext {
        self.retry = retry;
        self
    }

    /// The same context, cancelled when `cancellation` is.
    #[must_use]
    pub fn with_cancellation(mut self, cancellation: Cancellation) -> ActivityContext {
        self.cancellation = cancellation;
        self
    }

    /// The orchestration instance that scheduled this activity.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance
    }

    /// The execution of that instance.
    pub fn execution_id(&self) -> ExecutionId {
        self.execution
    }

    /// The task's sequence number within the execution (each attempt of a retried call is
    /// a task of its own).
    pub fn task_id(&self) -> TaskId {
        self.task
    }

    /// The activity's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which attempt of the call this is: 1, then 2 for the first retry of
    /// `call_activity_with_retry`, and so on. A run again after a crash is the same
    /// attempt.
    pub fn attempt(&self) -> u32 {
        self.retry.map_or(1, |retry| retry.number)
    }

    /// A key that is the same for every run of this call — across crashes and across the
    /// attempts of a retried call — and different for every other call:
    /// `"{instance}:{execution}:{task of the first attempt}"`. Hand it to a payment
    /// provider or a database as the idempotency key, and a call that ran twice takes
    /// effect once.
    pub fn idempotency_key(&self) -> String {
        let first = self.retry.map_or(self.task, |retry| retry.first);
        format!("{}:{}:{}", self.instance, self.execution, first)
    }

    /// Whether the orchestration no longer wants this run's result: it lost a race (a
    /// `select`, a timeout), its instance was terminated or ended, or the runtime is
    /// shutting down (then it runs again after the next start). A long activity checks it
    /// between steps, or awaits [`cancelled`](ActivityContext::cancelled), and stops
    /// early; what it returns after cancellation is discarded.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Resolves once this run is cancelled (see [`is_cancelled`](Self::is_cancelled));
    /// race it against the work:
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use std::time::Duration;
    /// #[activity]
    /// async fn transcode(ctx: ActivityContext, file: String) -> Result<String, Error> {
    ///     tokio::select! {
    ///         _ = ctx.cancelled() => Err(Error::msg("cancelled")), // discarded anyway
    ///         _ = tokio::time::sleep(Duration::from_millis(1)) => Ok(format!("{file}.mp4")),
    ///     }
    /// }
    /// ```
    pub fn cancelled(&self) -> Cancelled {
        self.cancellation.cancelled()
    }
}

/// A flag that says a run is no longer wanted, and wakes whoever waits for it. The runtime
/// keeps one per running activity and raises it; clones share the flag.
#[derive(Clone, Default)]
pub struct Cancellation {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    cancelled: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl Cancellation {
    /// A flag not raised.
    pub fn new() -> Cancellation {
        Cancellation::default()
    }

    /// Raises the flag (once; later calls do nothing) and wakes every waiter.
    pub fn cancel(&self) {
        if self.shared.cancelled.swap(true, Ordering::AcqRel) {
            return;
        }
        let waiters = std::mem::take(
            &mut *self
                .shared
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for waker in waiters {
            waker.wake();
        }
    }

    /// Whether the flag is raised.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// A future that resolves once the flag is raised.
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl std::fmt::Debug for Cancellation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancellation")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Resolves once a [`Cancellation`] is raised. Created by
/// [`ActivityContext::cancelled`].
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled {
    shared: Arc<Shared>,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.cancelled.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: `cancel` raises the flag before it takes the list,
        // so a waiter added after this check is woken.
        if self.shared.cancelled.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|waiter| waiter.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn cancelling_wakes_every_waiter_once_and_stays_cancelled() {
        let cancellation = Cancellation::new();
        let (one, two) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (waker_one, waker_two) = (Waker::from(Arc::clone(&one)), Waker::from(Arc::clone(&two)));
        let mut cx = Context::from_waker(&waker_one);
        let mut first = cancellation.cancelled();
        let mut second = cancellation.clone().cancelled();
        assert!(Pin::new(&mut first).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut first).poll(&mut cx).is_pending()); // registered once
        assert!(
            Pin::new(&mut second)
                .poll(&mut Context::from_waker(&waker_two))
                .is_pending()
        );
        cancellation.cancel();
        cancellation.cancel();
        assert_eq!(one.0.load(Ordering::SeqCst), 1);
        assert_eq!(two.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut first).poll(&mut cx).is_ready());
        assert!(
            Pin::new(&mut cancellation.cancelled())
                .poll(&mut cx)
                .is_ready()
        );
    }

    #[test]
    fn retries_share_the_first_attempts_key() {
        let instance = InstanceId::new("order-1").unwrap_or_else(|e| panic!("{e}"));
        let first = ActivityContext::new(instance.clone(), ExecutionId(7), TaskId(2), "charge");
        let third = ActivityContext::new(instance, ExecutionId(7), TaskId(9), "charge").with_retry(
            Some(Attempt {
                first: TaskId(2),
                number: 3,
            }),
        );
        assert_eq!(first.idempotency_key(), third.idempotency_key());
        assert_eq!((first.attempt(), third.attempt()), (1, 3));
        assert_eq!(third.task_id(), TaskId(9));
    }
}
