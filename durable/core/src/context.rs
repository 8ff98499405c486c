//! [`OrchestrationContext`]: everything an orchestrator may do — call activities and
//! sub-orchestrations, create durable timers, read the replay-safe clock, make
//! deterministic ids, continue as new.

use crate::error::{Error, ErrorKind};
use crate::function::{Activity, LocalBoxFuture, Orchestrator};
use crate::state::{State, TaskKind};
use crate::tasks::{ContinueAsNew, DurableTask, JoinAll, Select, SelectAll};
use crate::turn::Action;
use durable_types::{EntityId, ExecutionId, InstanceId, Json, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// The orchestrator's handle on its execution. Cheap to clone; it stays on the
/// orchestration thread (it is neither `Send` nor `Sync`).
///
/// Every method is replay-safe: it returns the same thing at the same point of every
/// replay.
#[derive(Clone)]
pub struct OrchestrationContext {
    state: Rc<RefCell<State>>,
}

impl std::fmt::Debug for OrchestrationContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("OrchestrationContext")
            .field("instance", &state.instance)
            .field("execution", &state.execution)
            .finish_non_exhaustive()
    }
}

impl OrchestrationContext {
    pub(crate) fn new(state: Rc<RefCell<State>>) -> OrchestrationContext {
        OrchestrationContext { state }
    }

    /// The id of this orchestration instance.
    pub fn instance_id(&self) -> InstanceId {
        self.state.borrow().instance.clone()
    }

    /// The number of the current execution (1, then one more after each
    /// `continue_as_new`).
    pub fn execution_id(&self) -> ExecutionId {
        self.state.borrow().execution
    }

    /// Whether the code is being replayed from history (true) or runs for the first time
    /// (false). Use it to skip logging during replay, never to change what the code does.
    pub fn is_replaying(&self) -> bool {
        self.state.borrow().replaying
    }

    /// The time of the current turn, recorded in history: the replay-safe replacement for
    /// `SystemTime::now()`.
    pub fn current_utc_datetime(&self) -> SystemTime {
        self.state.borrow().now.to_system_time()
    }

    /// A new UUID, the same at this point of every replay: the replay-safe replacement for
    /// `Uuid::new_v4()`. Derived from the instance id, the execution and a counter.
    pub fn new_guid(&self) -> uuid::Uuid {
        let mut state = self.state.borrow_mut();
        let name = format!(
            "{}\u{1f}{}\u{1f}{}",
            state.instance, state.execution, state.guids
        );
        state.guids += 1;
        uuid::Uuid::new_v5(&GUID_NAMESPACE, name.as_bytes())
    }

    /// Schedules activity `A` with `input` and returns its task; await it for the output.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// #[activity]
    /// async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    ///     Ok(x + 1)
    /// }
    ///
    /// #[orchestrator]
    /// async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ///     let a = ctx.call_activity(add_one, x).await?;
    ///     ctx.call_activity(add_one, a).await
    /// }
    /// ```
    pub fn call_activity<A: Activity>(
        &self,
        activity: A,
        input: A::Input,
    ) -> DurableTask<A::Output> {
        let _ = activity;
        match Json::encode(&input) {
            Ok(input) => self.schedule_activity(A::NAME, input),
            Err(error) => self.invalid(Error::new(
                ErrorKind::Serialization,
                format!(
                    "the input of activity `{}` cannot be serialized to JSON: {error}",
                    A::NAME
                ),
            )),
        }
    }

    /// Calls activity `A`, retrying failures per `policy` and waiting between attempts on
    /// durable timers. Resolves to the first success, or to the last attempt's error.
    pub fn call_activity_with_retry<A: Activity>(
        &self,
        activity: A,
        input: A::Input,
        policy: RetryPolicy,
    ) -> LocalBoxFuture<'static, Result<A::Output, Error>> {
        let _ = activity;
        let ctx = self.clone();
        let input = Json::encode(&input);
        Box::pin(async move {
            let input = input.map_err(|error| {
                Error::new(
                    ErrorKind::Serialization,
                    format!(
                        "the input of activity `{}` cannot be serialized to JSON: {error}",
                        A::NAME
                    ),
                )
            })?;
            let mut attempt = 1;
            loop {
                let result = ctx
                    .schedule_activity::<A::Output>(A::NAME, input.clone())
                    .await;
                match result {
                    Ok(output) => return Ok(output),
                    Err(error) if attempt >= policy.max_attempts => return Err(error),
                    Err(_) => {
                        let delay = policy.delay_before_retry(attempt);
                        if !delay.is_zero() {
                            ctx.sleep(delay).await?;
                        }
                        attempt += 1;
                    }
                }
            }
        })
    }

    /// Starts orchestrator `O` as a sub-orchestration and returns its task; await it for
    /// the child's output. The child's instance id is derived from this instance's id.
    pub fn call_sub_orchestrator<O: Orchestrator>(
        &self,
        orchestrator: O,
        input: O::Input,
    ) -> DurableTask<O::Output> {
        let child = {
            let state = self.state.borrow();
            let id = format!(
                "{}:{}:{}",
                state.instance,
                state.execution,
                state.tasks.len()
            );
            drop(state);
            InstanceId::new(id).unwrap_or_else(|_| self.guid_instance_id())
        };
        self.start_sub_orchestration(orchestrator, child, input)
    }

    /// Starts orchestrator `O` as a sub-orchestration with instance id `instance_id`.
    pub fn call_sub_orchestrator_with_id<O: Orchestrator>(
        &self,
        orchestrator: O,
        instance_id: impl AsRef<str>,
        input: O::Input,
    ) -> DurableTask<O::Output> {
        match InstanceId::new(instance_id.as_ref()) {
            Ok(child) => self.start_sub_orchestration(orchestrator, child, input),
            Err(error) => self.invalid(Error::new(
                ErrorKind::Application,
                format!("cannot start sub-orchestration `{}`: {error}", O::NAME),
            )),
        }
    }

    /// A durable timer that fires at `fire_at` (immediately if that has passed). It
    /// survives restarts and costs nothing while it waits.
    pub fn create_timer(&self, fire_at: SystemTime) -> DurableTask<()> {
        let fire_at = Timestamp::from_system_time(fire_at);
        let id = self
            .state
            .borrow_mut()
            .schedule(TaskKind::Timer { fire_at }, |id| Action::CreateTimer {
                id,
                fire_at,
            });
        DurableTask::scheduled(Rc::clone(&self.state), id)
    }

    /// A durable timer that fires `duration` after the current turn's time: the
    /// replay-safe replacement for sleeping.
    pub fn sleep(&self, duration: Duration) -> DurableTask<()> {
        let fire_at = self.state.borrow().now.saturating_add(duration);
        self.create_timer(fire_at.to_system_time())
    }

    /// Waits for the next external event `name` (raised with `Client::raise_event`) and
    /// decodes its payload as `T`.
    ///
    /// Events that arrived before the orchestrator waited are kept: the wait takes the
    /// oldest of that name. Several events of one name are delivered first-in, first-out.
    /// If the wait is dropped (it lost a [`select`](OrchestrationContext::select)), it
    /// stops waiting; an event it had already received goes to the next wait of that name.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use durable::Either;
    /// # use std::time::Duration;
    /// #[orchestrator]
    /// async fn approval(ctx: OrchestrationContext) -> Result<String, Error> {
    ///     let approved = ctx.wait_for_event::<bool>("ApprovalEvent");
    ///     let timeout = ctx.sleep(Duration::from_secs(72 * 3600));
    ///     Ok(match ctx.select(approved, timeout).await {
    ///         Either::Left(Ok(true)) => "approved".to_owned(),
    ///         Either::Left(_) => "rejected".to_owned(),
    ///         Either::Right(_) => "escalated".to_owned(),
    ///     })
    /// }
    /// ```
    pub fn wait_for_event<T: DeserializeOwned>(&self, name: impl Into<String>) -> DurableTask<T> {
        let id = self.state.borrow_mut().wait_for_event(&name.into());
        DurableTask::scheduled(Rc::clone(&self.state), id)
    }

    /// Waits for the first of two durable tasks (activities, timers, events,
    /// sub-orchestrations), returning which one won and its outcome.
    ///
    /// The winner is the task whose completion comes first in the history — never a matter
    /// of polling order — so replay picks the same winner. The loser is dropped: a timer is
    /// cancelled (it never fires); an activity or sub-orchestration runs on, its result
    /// ignored.
    pub fn select<A, B>(&self, left: DurableTask<A>, right: DurableTask<B>) -> Select<A, B>
    where
        A: DeserializeOwned,
        B: DeserializeOwned,
    {
        Select::new(left, right)
    }

    /// Waits for the first of several durable tasks, by history order; resolves to its
    /// index in `tasks` and its outcome. The others are dropped, as with
    /// [`select`](OrchestrationContext::select).
    pub fn select_all<T: DeserializeOwned>(
        &self,
        tasks: impl IntoIterator<Item = DurableTask<T>>,
    ) -> SelectAll<T> {
        SelectAll::new(tasks.into_iter().collect())
    }

    /// Waits for all `futures`, returning their outputs in the order given, or the first
    /// error as soon as one fails (the others keep running; their results are ignored).
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # #[activity]
    /// # async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> { Ok(x + 1) }
    /// #[orchestrator]
    /// async fn fan(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
    ///     let tasks: Vec<_> = (0..n).map(|i| ctx.call_activity(add_one, i)).collect();
    ///     let outputs = ctx.join_all(tasks).await?;
    ///     Ok(outputs.into_iter().sum())
    /// }
    /// ```
    pub fn join_all<F, T>(&self, futures: impl IntoIterator<Item = F>) -> JoinAll<F, T>
    where
        F: Future<Output = Result<T, Error>>,
    {
        JoinAll::new(futures)
    }

    /// Ends this execution and starts a new one of the same orchestrator with `input` and
    /// an empty history: for eternal orchestrations. Return its (never-resolving) future:
    /// `return ctx.continue_as_new(n + 1).await;`.
    pub fn continue_as_new<T>(&self, input: impl Serialize) -> ContinueAsNew<T> {
        // An input that cannot be serialized continues with null; it is the orchestrator's
        // own type, so this does not happen for derived `Serialize` implementations.
        let input = Json::encode(&input).unwrap_or_else(|_| Json::null());
        self.state.borrow_mut().continue_as_new = Some(input);
        ContinueAsNew::new()
    }

    /// Sets the instance's custom status, a JSON value visible in its status.
    pub fn set_custom_status(&self, status: impl Serialize) {
        self.state.borrow_mut().custom_status = Json::encode(&status).ok();
    }

    /// Calls `operation` of `entity` with a JSON input and waits for its result: the
    /// untyped form of `ctx.entity::<E>(key).operation(..)`.
    pub fn call_entity<T: DeserializeOwned>(
        &self,
        entity: &EntityId,
        operation: &str,
        input: Json,
    ) -> DurableTask<T> {
        let (_, held) = self.state.borrow().critical_section();
        if !held.is_empty() && !held.contains(entity) {
            return self.invalid(Error::new(
                ErrorKind::LockingRules,
                format!(
                    "cannot call `{operation}` of entity `{entity}` inside a critical section \
                     that does not lock it: it could wait forever for another orchestration's \
                     lock. Lock it together with the others, signal it instead, or call it \
                     after releasing the locks"
                ),
            ));
        }
        let kind = TaskKind::EntityCall {
            entity: entity.clone(),
            operation: operation.to_owned(),
        };
        let id = self
            .state
            .borrow_mut()
            .schedule(kind, |id| Action::CallEntity {
                id,
                entity: entity.clone(),
                operation: operation.to_owned(),
                input,
            });
        DurableTask::scheduled(Rc::clone(&self.state), id)
    }

    /// Signals `operation` of `entity` with a JSON input, without waiting: the untyped
    /// form of `ctx.entity::<E>(key).signal().operation(..)`.
    pub fn signal_entity(&self, entity: &EntityId, operation: &str, input: Json) {
        self.state.borrow_mut().signal(|id| Action::SignalEntity {
            id,
            entity: entity.clone(),
            operation: operation.to_owned(),
            input,
        });
    }

    pub(crate) fn acquire_locks(&self, entities: Vec<EntityId>) -> DurableTask<()> {
        let (in_force, _) = self.state.borrow().critical_section();
        if in_force {
            return self.invalid(Error::new(
                ErrorKind::LockingRules,
                "cannot lock entities while holding (or acquiring) other locks: two \
                 orchestrations nesting locks in different orders would deadlock. Lock every \
                 entity the critical section needs in one `lock_entities` call",
            ));
        }
        let kind = TaskKind::Lock {
            entities: entities.clone(),
        };
        let id = self
            .state
            .borrow_mut()
            .schedule(kind, |id| Action::AcquireLocks { id, entities });
        DurableTask::scheduled(Rc::clone(&self.state), id)
    }

    pub(crate) fn state(&self) -> Rc<RefCell<State>> {
        Rc::clone(&self.state)
    }

    fn schedule_activity<T: DeserializeOwned>(&self, name: &str, input: Json) -> DurableTask<T> {
        let kind = TaskKind::Activity {
            name: name.to_owned(),
        };
        let id = self
            .state
            .borrow_mut()
            .schedule(kind, |id| Action::ScheduleActivity {
                id,
                name: name.to_owned(),
                input,
            });
        DurableTask::scheduled(Rc::clone(&self.state), id)
    }

    fn start_sub_orchestration<O: Orchestrator>(
        &self,
        _orchestrator: O,
        child: InstanceId,
        input: O::Input,
    ) -> DurableTask<O::Output> {
        if self.state.borrow().critical_section().0 {
            return self.invalid(Error::new(
                ErrorKind::LockingRules,
                format!(
                    "cannot start sub-orchestration `{}` inside a critical section: it would \
                     wait for the locks its parent holds. Start it before or after the locks",
                    O::NAME
                ),
            ));
        }
        let input = match Json::encode(&input) {
            Ok(input) => input,
            Err(error) => {
                return self.invalid(Error::new(
                    ErrorKind::Serialization,
                    format!(
                        "the input of sub-orchestration `{}` cannot be serialized to JSON: {error}",
                        O::NAME
                    ),
                ));
            }
        };
        let kind = TaskKind::SubOrchestration {
            name: O::NAME.to_owned(),
            instance: child.clone(),
        };
        let id = self
            .state
            .borrow_mut()
            .schedule(kind, |id| Action::StartSubOrchestration {
                id,
                name: O::NAME.to_owned(),
                instance: child,
                input,
            });
        DurableTask::scheduled(Rc::clone(&self.state), id)
    }

    /// A task that resolves to `error` at once, scheduling nothing.
    pub(crate) fn failed_task<T>(&self, error: Error) -> DurableTask<T> {
        self.invalid(error)
    }

    fn invalid<T>(&self, error: Error) -> DurableTask<T> {
        DurableTask::invalid(Rc::clone(&self.state), error)
    }

    fn guid_instance_id(&self) -> InstanceId {
        let guid = self.new_guid().to_string();
        InstanceId::new(&guid).unwrap_or_else(|error| unreachable!("a UUID is a valid id: {error}"))
    }
}

/// Namespace of [`OrchestrationContext::new_guid`]'s version-5 UUIDs.
const GUID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d7e_0c5a_9b0e_4a8e_8f71_2c3a_d1f0_b7e4);

/// How [`OrchestrationContext::call_activity_with_retry`] retries.
///
/// The delay before retry `n` (after attempt `n` failed) is
/// `first_interval * backoff_coefficient^(n-1)`, capped at `max_interval`.
///
/// ```
/// use durable::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy {
///     max_attempts: 5,
///     first_interval: Duration::from_secs(1),
///     backoff_coefficient: 2.0,
///     ..RetryPolicy::default()
/// };
/// assert_eq!(policy.delay_before_retry(3), Duration::from_secs(4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The delay before the first retry.
    pub first_interval: Duration,
    /// The factor by which each delay grows.
    pub backoff_coefficient: f64,
    /// The longest delay.
    pub max_interval: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, one second apart, doubling, at most an hour.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            first_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts with `first_interval` before the first retry,
    /// doubling after that.
    pub fn new(max_attempts: u32, first_interval: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            first_interval,
            ..RetryPolicy::default()
        }
    }

    /// The delay after failed attempt `attempt` (1-based), before the next one.
    pub fn delay_before_retry(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.backoff_coefficient.max(0.0).powi(exponent);
        let seconds = self.first_interval.as_secs_f64() * factor;
        let max = self.max_interval.as_secs_f64();
        if seconds.is_finite() && seconds < max {
            Duration::from_secs_f64(seconds.max(0.0))
        } else {
            self.max_interval
        }
    }
}
