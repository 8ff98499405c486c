//! The futures an orchestrator awaits: [`DurableTask`] (one activity, timer or
//! sub-orchestration), [`JoinAll`], [`Select`], [`SelectAll`], [`Timeout`] and
//! [`ContinueAsNew`].
//!
//! They never block and never read a clock. A `DurableTask` is resolved by the engine when
//! the completion event is applied, so a task resolves at the same point of every replay.

use crate::error::{Error, ErrorKind};
use crate::state::{State, TaskKind};
use durable_types::{Failure, Json, TaskId};
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// A durable task: an activity call, a timer or a sub-orchestration. Await it for the
/// typed result.
///
/// The task is scheduled when it is created, whether or not it is awaited, as in Durable
/// Functions; awaiting only waits for its result.
#[must_use = "a durable task does nothing for the orchestration until it is awaited"]
pub struct DurableTask<T> {
    state: Rc<RefCell<State>>,
    status: TaskStatus,
    output: PhantomData<fn() -> T>,
}

enum TaskStatus {
    Scheduled(TaskId),
    /// Creating the task failed (its input did not serialize, its instance id is invalid):
    /// it resolves to this error without being scheduled.
    Invalid(Option<Error>),
}

impl<T> DurableTask<T> {
    pub(crate) fn scheduled(state: Rc<RefCell<State>>, id: TaskId) -> DurableTask<T> {
        DurableTask {
            state,
            status: TaskStatus::Scheduled(id),
            output: PhantomData,
        }
    }

    pub(crate) fn invalid(state: Rc<RefCell<State>>, error: Error) -> DurableTask<T> {
        DurableTask {
            state,
            status: TaskStatus::Invalid(Some(error)),
            output: PhantomData,
        }
    }

    /// The task's sequence number, if it was scheduled.
    pub fn task_id(&self) -> Option<TaskId> {
        match self.status {
            TaskStatus::Scheduled(id) => Some(id),
            TaskStatus::Invalid(_) => None,
        }
    }

    /// The position of this task's completion among the execution's completions, in
    /// history order, once it has completed. A task that could not be created counts as
    /// completed first.
    pub fn completion_order(&self) -> Option<u64> {
        let id = match &self.status {
            TaskStatus::Scheduled(id) => *id,
            TaskStatus::Invalid(_) => return Some(0),
        };
        let state = self.state.borrow();
        let task = state.task(id)?;
        task.completed.then_some(task.completion_order)
    }
}

impl<T> Drop for DurableTask<T> {
    fn drop(&mut self) {
        if let TaskStatus::Scheduled(id) = self.status
            && let Ok(mut state) = self.state.try_borrow_mut()
        {
            state.abandon(id);
        }
    }
}

impl<T: DeserializeOwned> Future for DurableTask<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let id = match &mut this.status {
            TaskStatus::Scheduled(id) => *id,
            TaskStatus::Invalid(error) => {
                return match error.take() {
                    Some(error) => Poll::Ready(Err(error)),
                    None => Poll::Pending,
                };
            }
        };
        let mut state = this.state.borrow_mut();
        let Some(task) = state.task_mut(id) else {
            return Poll::Ready(Err(Error::new(
                ErrorKind::Internal,
                format!("task {id} does not exist in this execution"),
            )));
        };
        match task.outcome.take() {
            Some(outcome) => {
                let kind = task.kind.clone();
                drop(state);
                Poll::Ready(resolve(&kind, outcome))
            }
            None => {
                match &mut task.waker {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => task.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

fn resolve<T: DeserializeOwned>(
    kind: &TaskKind,
    outcome: Result<Json, Failure>,
) -> Result<T, Error> {
    match outcome {
        Ok(output) => output.decode().map_err(|error| {
            Error::new(
                ErrorKind::Serialization,
                format!(
                    "the result of {} does not decode as the expected type: {error}",
                    kind.describe()
                ),
            )
        }),
        Err(failure) => Err(match kind {
            TaskKind::Activity { name } => Error::caused_by(
                ErrorKind::ActivityFailed,
                format!("activity `{name}` failed"),
                failure,
            ),
            TaskKind::SubOrchestration { name, instance } => Error::caused_by(
                ErrorKind::SubOrchestrationFailed,
                format!("sub-orchestration `{name}` (instance `{instance}`) failed"),
                failure,
            ),
            TaskKind::EntityCall { entity, operation } => Error::caused_by(
                ErrorKind::EntityOperationFailed,
                format!("operation `{operation}` of entity `{entity}` failed"),
                failure,
            ),
            TaskKind::Timer { .. }
            | TaskKind::Event { .. }
            | TaskKind::Signal
            | TaskKind::Lock { .. } => Error::from_failure(failure),
        }),
    }
}

/// Waits for several futures, returning their outputs in the order given, or the first
/// error (in history order) as soon as it happens. Created by
/// [`OrchestrationContext::join_all`](crate::OrchestrationContext::join_all).
///
/// Each child is polled only when it was woken, so fanning in 10,000 results costs
/// 10,000 small polls, not 10,000².
#[must_use = "futures do nothing unless awaited"]
pub struct JoinAll<F, T> {
    children: Vec<Option<Pin<Box<F>>>>,
    outputs: Vec<Option<T>>,
    wakers: Vec<Waker>,
    shared: Arc<JoinShared>,
    remaining: usize,
    started: bool,
}

#[derive(Default)]
struct JoinShared {
    ready: Mutex<Vec<usize>>,
    parent: Mutex<Option<Waker>>,
}

struct ChildWake {
    index: usize,
    shared: Arc<JoinShared>,
}

impl Wake for ChildWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
        let parent = self
            .shared
            .parent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(waker) = parent.as_ref() {
            waker.wake_by_ref();
        }
    }
}

// The children are pinned in their own boxes and the outputs are never pinned, so moving a
// `JoinAll` never moves a pinned value.
impl<F, T> Unpin for JoinAll<F, T> {}

impl<F, T> JoinAll<F, T>
where
    F: Future<Output = Result<T, Error>>,
{
    pub(crate) fn new(futures: impl IntoIterator<Item = F>) -> JoinAll<F, T> {
        let children: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
        let count = children.len();
        JoinAll {
            outputs: (0..count).map(|_| None).collect(),
            children,
            wakers: Vec::new(),
            shared: Arc::new(JoinShared::default()),
            remaining: count,
            started: false,
        }
    }
}

impl<F, T> Future for JoinAll<F, T>
where
    F: Future<Output = Result<T, Error>>,
{
    type Output = Result<Vec<T>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = Pin::into_inner(self);
        {
            let mut parent = this
                .shared
                .parent
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match parent.as_mut() {
                Some(waker) => waker.clone_from(cx.waker()),
                None => *parent = Some(cx.waker().clone()),
            }
        }
        let to_poll: Vec<usize> = if this.started {
            std::mem::take(
                &mut *this
                    .shared
                    .ready
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            )
        } else {
            this.started = true;
            this.wakers = (0..this.children.len())
                .map(|index| {
                    Waker::from(Arc::new(ChildWake {
                        index,
                        shared: Arc::clone(&this.shared),
                    }))
                })
                .collect();
            (0..this.children.len()).collect()
        };
        for index in to_poll {
            let Some(child) = this.children.get_mut(index).and_then(Option::as_mut) else {
                continue; // already done, or woken twice
            };
            let mut child_cx = Context::from_waker(&this.wakers[index]);
            match child.as_mut().poll(&mut child_cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(output)) => {
                    this.children[index] = None;
                    this.outputs[index] = Some(output);
                    this.remaining -= 1;
                }
                Poll::Ready(Err(error)) => {
                    this.children.iter_mut().for_each(|child| *child = None);
                    return Poll::Ready(Err(error));
                }
            }
        }
        if this.remaining == 0 {
            let outputs = std::mem::take(&mut this.outputs)
                .into_iter()
                .flatten()
                .collect();
            Poll::Ready(Ok(outputs))
        } else {
            Poll::Pending
        }
    }
}

/// The future returned by
/// [`OrchestrationContext::continue_as_new`](crate::OrchestrationContext::continue_as_new):
/// it never resolves; the execution ends at the end of the turn and a new one starts.
#[must_use = "return `ctx.continue_as_new(input).await` from the orchestrator"]
pub struct ContinueAsNew<T> {
    output: PhantomData<fn() -> T>,
}

impl<T> ContinueAsNew<T> {
    pub(crate) fn new() -> ContinueAsNew<T> {
        ContinueAsNew {
            output: PhantomData,
        }
    }
}

impl<T> Future for ContinueAsNew<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        Poll::Pending
    }
}

/// One of two values: the outcome of [`OrchestrationContext::select`](crate::OrchestrationContext::select).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Either<L, R> {
    /// The first task won.
    Left(L),
    /// The second task won.
    Right(R),
}

/// Waits for the first of two futures — durable tasks or any composite of them (a retried
/// call, two activities in sequence, a sub-orchestration). Created by
/// [`OrchestrationContext::select`](crate::OrchestrationContext::select).
///
/// The engine applies history one event at a time and polls the orchestrator after each
/// event that woke it, so the first future to be ready is the one whose last needed event
/// comes first in the history, in a live run and in every replay alike. If both are ready
/// at the same poll, the left one wins. The loser is dropped at once: its timers are
/// cancelled, its activities are told to stop, its event waits stop waiting.
#[must_use = "futures do nothing unless awaited"]
pub struct Select<A, B> {
    left: Option<Pin<Box<A>>>,
    right: Option<Pin<Box<B>>>,
    state: Rc<RefCell<State>>,
}

impl<A, B> Select<A, B> {
    pub(crate) fn new(state: Rc<RefCell<State>>, left: A, right: B) -> Select<A, B> {
        Select {
            left: Some(Box::pin(left)),
            right: Some(Box::pin(right)),
            state,
        }
    }
}

/// Drops a race's losers, cancelling what they wait for: timers (as any dropped timer)
/// and activities (which a plain drop would leave running, fire-and-forget).
fn drop_losers<T>(state: &Rc<RefCell<State>>, losers: T) {
    state.borrow_mut().cancelling += 1;
    drop(losers);
    state.borrow_mut().cancelling -= 1;
}

impl<A, B> Unpin for Select<A, B> {}

impl<A: Future, B: Future> Future for Select<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = Pin::into_inner(self);
        let (Some(left), Some(right)) = (this.left.as_mut(), this.right.as_mut()) else {
            return Poll::Pending; // polled after completion
        };
        if let Poll::Ready(output) = left.as_mut().poll(cx) {
            // The loser goes now, so what it waited for is cancelled in this turn.
            drop_losers(&this.state, this.right.take());
            this.left = None;
            return Poll::Ready(Either::Left(output));
        }
        if let Poll::Ready(output) = right.as_mut().poll(cx) {
            drop_losers(&this.state, this.left.take());
            this.right = None;
            return Poll::Ready(Either::Right(output));
        }
        Poll::Pending
    }
}

/// Waits for the first of several futures; resolves to its index and output. The rule is
/// [`Select`]'s: the first to be ready wins, the lowest index among those ready at the
/// same poll; the others are dropped at once.
#[must_use = "futures do nothing unless awaited"]
pub struct SelectAll<F> {
    futures: Vec<Pin<Box<F>>>,
    state: Rc<RefCell<State>>,
}

impl<F> SelectAll<F> {
    pub(crate) fn new(state: Rc<RefCell<State>>, futures: Vec<F>) -> SelectAll<F> {
        SelectAll {
            futures: futures.into_iter().map(Box::pin).collect(),
            state,
        }
    }
}

impl<F> Unpin for SelectAll<F> {}

impl<F: Future> Future for SelectAll<F> {
    type Output = (usize, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = Pin::into_inner(self);
        let winner = this
            .futures
            .iter_mut()
            .enumerate()
            .find_map(|(index, future)| match future.as_mut().poll(cx) {
                Poll::Ready(output) => Some((index, output)),
                Poll::Pending => None,
            });
        match winner {
            Some(won) => {
                drop_losers(&this.state, std::mem::take(&mut this.futures));
                Poll::Ready(won)
            }
            None => Poll::Pending,
        }
    }
}

/// A future raced against a durable timer. Created by
/// [`OrchestrationContext::timeout`](crate::OrchestrationContext::timeout): resolves to the
/// future's output, or — if the timer fires first — to an error of kind
/// [`ErrorKind::TimedOut`], dropping the future (which cancels what it was waiting for).
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    race: Select<F, DurableTask<()>>,
    after: Duration,
}

impl<F> Timeout<F> {
    pub(crate) fn new(future: F, timer: DurableTask<()>, after: Duration) -> Timeout<F> {
        Timeout {
            race: Select::new(Rc::clone(&timer.state), future, timer),
            after,
        }
    }
}

impl<F> Unpin for Timeout<F> {}

impl<F: Future<Output = Result<T, Error>>, T> Future for Timeout<F> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = Pin::into_inner(self);
        match Pin::new(&mut this.race).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Either::Left(output)) => Poll::Ready(output),
            Poll::Ready(Either::Right(Err(error))) => Poll::Ready(Err(error)),
            Poll::Ready(Either::Right(Ok(()))) => Poll::Ready(Err(Error::new(
                ErrorKind::TimedOut,
                format!(
                    "did not finish within {:?}; what it waited for was cancelled",
                    this.after
                ),
            ))),
        }
    }
}
