//! [`OrchestrationContext`]: everything an orchestrator may do — call activities and
//! sub-orchestrations, create durable timers, read the replay-safe clock, make
//! deterministic ids, continue as new.

use crate::error::{Error, ErrorKind};
use crate::events::EventName;
use crate::function::{Activity, LocalBoxFuture, Orchestrator};
use crate::retry::{RetryPolicy, call_with_retry};
use crate::state::{State, TaskKind};
use crate::tasks::{ContinueAsNew, DurableTask, JoinAll, Select, SelectAll, Timeout};
use crate::turn::Action;
use durable_types::{Attempt, EntityId, ExecutionId, Failure, InstanceId, Json, Timestamp};
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

    /// The id of the current execution: a number the store hands out, unique among all
    /// executions of all instances of the store, growing over time. It is *not* 1, 2, 3…
    /// per instance (see [`generation`](OrchestrationContext::generation) for that): a new
    /// execution of one instance gets whatever number comes next store-wide. Unique even
    /// after an instance is purged and its id used again, which is why the activity
    /// idempotency key is made of it.
    pub fn execution_id(&self) -> ExecutionId {
        self.state.borrow().execution
    }

    /// Which execution of this start this is: 1, then one more after each
    /// `continue_as_new`. (Starting an ended instance's id again begins at 1.)
    ///
    /// ```
    /// # use durable::prelude::*;
    /// #[orchestrator]
    /// async fn rollup(ctx: OrchestrationContext, total: u64) -> Result<u64, Error> {
    ///     if ctx.generation() == 10 {
    ///         return Ok(total); // ten rounds, each with a fresh history
    ///     }
    ///     ctx.continue_as_new(rollup, total + 1).await
    /// }
    /// ```
    pub fn generation(&self) -> u32 {
        self.state.borrow().generation
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
            Ok(input) => self.schedule_activity(A::NAME, input, None),
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
    /// durable timers. Resolves to the first success, or to the last attempt's error (or,
    /// past the policy's `timeout`, an error of kind [`ErrorKind::TimedOut`]).
    ///
    /// Every attempt of the call sees the same
    /// [`idempotency_key`](crate::ActivityContext::idempotency_key) and its own
    /// [`attempt`](crate::ActivityContext::attempt) number. The returned future can be raced
    /// like any other, with [`select`](OrchestrationContext::select) or
    /// [`timeout`](OrchestrationContext::timeout).
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use std::time::Duration;
    /// #[activity]
    /// async fn charge(ctx: ActivityContext, cents: u64) -> Result<String, Error> {
    ///     // The same key on every attempt: the provider charges once.
    ///     Ok(format!("charged {cents} as {}", ctx.idempotency_key()))
    /// }
    ///
    /// #[orchestrator]
    /// async fn checkout(ctx: OrchestrationContext, cents: u64) -> Result<String, Error> {
    ///     let policy = RetryPolicy {
    ///         max_attempts: 5,
    ///         first_interval: Duration::from_secs(2),
    ///         timeout: Some(Duration::from_secs(60)),
    ///         ..RetryPolicy::default()
    ///     };
    ///     ctx.call_activity_with_retry(charge, cents, policy).await
    /// }
    /// ```
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
            call_with_retry(ctx, A::NAME, input, policy).await
        })
    }

    /// Starts orchestrator `O` as a sub-orchestration and returns its task; await it for
    /// the child's output. The child's instance id is derived from this instance's id
    /// (`<parent>:<execution>:<task>`), so a replay finds the same child.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// #[activity]
    /// async fn ship(_ctx: ActivityContext, parcel: String) -> Result<String, Error> {
    ///     Ok(format!("tracking-{parcel}"))
    /// }
    ///
    /// #[orchestrator]
    /// async fn ship_order(ctx: OrchestrationContext, parcels: Vec<String>) -> Result<Vec<String>, Error> {
    ///     let mut tracking = Vec::new();
    ///     for parcel in parcels {
    ///         tracking.push(ctx.call_activity(ship, parcel).await?);
    ///     }
    ///     Ok(tracking)
    /// }
    ///
    /// #[orchestrator]
    /// async fn fulfil(ctx: OrchestrationContext, orders: Vec<Vec<String>>) -> Result<usize, Error> {
    ///     // One child per order, run side by side; each has its own history and status.
    ///     let children = orders.into_iter().map(|parcels| ctx.call_sub_orchestrator(ship_order, parcels));
    ///     let shipped = ctx.join_all(children).await?;
    ///     Ok(shipped.iter().map(Vec::len).sum())
    /// }
    /// ```
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

    /// Starts orchestrator `O` as a sub-orchestration with instance id `instance_id`
    /// (an id already in use fails the task, kind `Application`).
    ///
    /// ```
    /// # use durable::prelude::*;
    /// #[orchestrator]
    /// async fn audit(_ctx: OrchestrationContext, order: u64) -> Result<u64, Error> {
    ///     Ok(order)
    /// }
    ///
    /// #[orchestrator]
    /// async fn close_order(ctx: OrchestrationContext, order: u64) -> Result<u64, Error> {
    ///     // A readable id, so the audit can be looked up with the client.
    ///     ctx.call_sub_orchestrator_with_id(audit, format!("audit-{order}"), order).await
    /// }
    /// ```
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
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use std::time::Duration;
    /// #[orchestrator]
    /// async fn remind_tomorrow(ctx: OrchestrationContext, note: String) -> Result<String, Error> {
    ///     // From the turn's recorded time, never the wall clock: replays wait for the same instant.
    ///     let tomorrow = ctx.current_utc_datetime() + Duration::from_secs(24 * 3600);
    ///     ctx.create_timer(tomorrow).await?;
    ///     Ok(format!("reminder: {note}"))
    /// }
    /// ```
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
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use std::time::Duration;
    /// #[activity]
    /// async fn is_done(_ctx: ActivityContext, job: String) -> Result<bool, Error> {
    ///     Ok(job.is_empty())
    /// }
    ///
    /// #[orchestrator]
    /// async fn watch_job(ctx: OrchestrationContext, job: String) -> Result<u32, Error> {
    ///     // The monitor pattern: check, then sleep durably, until done.
    ///     let mut checks = 1;
    ///     while !ctx.call_activity(is_done, job.clone()).await? {
    ///         ctx.sleep(Duration::from_secs(30)).await?;
    ///         checks += 1;
    ///     }
    ///     Ok(checks)
    /// }
    /// ```
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
    /// `name` is an [`ExternalEvent`](crate::ExternalEvent), which fixes the payload's type
    /// on both sides, or a string (then say the type: `wait_for_event::<bool>("Approval")`).
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
    pub fn wait_for_event<T: DeserializeOwned>(&self, name: impl EventName<T>) -> DurableTask<T> {
        let id = self.state.borrow_mut().wait_for_event(name.event_name());
        DurableTask::scheduled(Rc::clone(&self.state), id)
    }

    /// Waits for the first of two futures, returning which one won and its output. Each
    /// may be a durable task (an activity, a timer, an event, a sub-orchestration) or any
    /// orchestration future made of them: a retried call, two steps in sequence, a
    /// [`join_all`](OrchestrationContext::join_all).
    ///
    /// The winner is the first to be ready as the history is applied, one event at a time
    /// — never a matter of wall-clock timing — so replay picks the same winner; if both are
    /// ready at once, the left one wins. The loser is dropped: its timers are cancelled,
    /// its activities are told to stop (see
    /// [`ActivityContext::cancelled`](crate::ActivityContext::cancelled)) and their results
    /// discarded; a sub-orchestration runs on, its result ignored.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use durable::Either;
    /// # use std::time::Duration;
    /// # #[activity]
    /// # async fn reserve(_ctx: ActivityContext, item: String) -> Result<u64, Error> { Ok(1) }
    /// # #[activity]
    /// # async fn pay(_ctx: ActivityContext, reservation: u64) -> Result<(), Error> { Ok(()) }
    /// #[orchestrator]
    /// async fn buy(ctx: OrchestrationContext, item: String) -> Result<bool, Error> {
    ///     // Two steps in sequence, raced as one against a durable timer.
    ///     let steps = async {
    ///         let reservation = ctx.call_activity(reserve, item).await?;
    ///         ctx.call_activity(pay, reservation).await
    ///     };
    ///     match ctx.select(steps, ctx.sleep(Duration::from_secs(300))).await {
    ///         Either::Left(paid) => paid.map(|()| true),
    ///         Either::Right(_) => Ok(false), // too slow: the step running is cancelled
    ///     }
    /// }
    /// ```
    pub fn select<A: Future, B: Future>(&self, left: A, right: B) -> Select<A, B> {
        Select::new(Rc::clone(&self.state), left, right)
    }

    /// Waits for the first of several futures; resolves to its index in `futures` and its
    /// output. The others are dropped, as with [`select`](OrchestrationContext::select);
    /// among futures ready at once, the lowest index wins.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # #[activity]
    /// # async fn quote(_ctx: ActivityContext, supplier: String) -> Result<u64, Error> { Ok(10) }
    /// #[orchestrator]
    /// async fn fastest_quote(ctx: OrchestrationContext, suppliers: Vec<String>) -> Result<u64, Error> {
    ///     let quotes = suppliers.into_iter().map(|s| ctx.call_activity(quote, s));
    ///     let (_winner, price) = ctx.select_all(quotes).await;
    ///     price // the slower suppliers' activities are cancelled
    /// }
    /// ```
    pub fn select_all<F: Future>(&self, futures: impl IntoIterator<Item = F>) -> SelectAll<F> {
        SelectAll::new(Rc::clone(&self.state), futures.into_iter().collect())
    }

    /// Races `future` against a durable timer of `after`: its output if it finishes first;
    /// otherwise an error of kind [`ErrorKind::TimedOut`], and `future` is dropped — an
    /// activity it waited for is told to stop and its result discarded. The timer is
    /// created now, so it survives restarts like any other.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use std::time::Duration;
    /// # #[activity]
    /// # async fn render(_ctx: ActivityContext, page: u32) -> Result<String, Error> { Ok(String::new()) }
    /// #[orchestrator]
    /// async fn report(ctx: OrchestrationContext, page: u32) -> Result<String, Error> {
    ///     let rendered = ctx.call_activity(render, page);
    ///     match ctx.timeout(Duration::from_secs(30), rendered).await {
    ///         Err(error) if error.kind() == ErrorKind::TimedOut => Ok("too slow".to_owned()),
    ///         other => other,
    ///     }
    /// }
    /// ```
    pub fn timeout<F, T>(&self, after: Duration, future: F) -> Timeout<F>
    where
        F: Future<Output = Result<T, Error>>,
    {
        Timeout::new(future, self.sleep(after), after)
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
    /// an empty history: for eternal orchestrations. Name the orchestrator itself, so that
    /// the input's type is checked: `return ctx.continue_as_new(counter, n + 1).await;`.
    /// The returned future never resolves; the execution ends at the end of the turn.
    /// External events that arrived and were not read are carried over.
    ///
    /// Naming another orchestrator than the one running fails the execution (it cannot
    /// continue as something else); an input that does not serialize fails it too.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # use std::time::Duration;
    /// #[orchestrator]
    /// async fn poll_inbox(ctx: OrchestrationContext, seen: u64) -> Result<(), Error> {
    ///     ctx.sleep(Duration::from_secs(60)).await?;
    ///     ctx.continue_as_new(poll_inbox, seen + 1).await // `"x"` here would not compile
    /// }
    /// ```
    pub fn continue_as_new<O: Orchestrator>(
        &self,
        orchestrator: O,
        input: O::Input,
    ) -> ContinueAsNew<Result<O::Output, Error>> {
        let _ = orchestrator;
        let mut state = self.state.borrow_mut();
        let next = if state.orchestrator != O::NAME {
            Err(Failure::new(
                ErrorKind::Application,
                format!(
                    "continue_as_new names orchestrator `{}`, but this instance runs `{}`: an execution continues as the orchestrator it runs",
                    O::NAME,
                    state.orchestrator
                ),
            ))
        } else {
            Json::encode(&input).map_err(|error| {
                Failure::new(
                    ErrorKind::Serialization,
                    format!(
                        "the input given to continue_as_new cannot be serialized to JSON: {error}"
                    ),
                )
            })
        };
        state.continue_as_new = Some(next);
        ContinueAsNew::new()
    }

    /// Sets the instance's custom status, a JSON value visible in its status (and over
    /// HTTP as `customStatus`).
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] if `status` cannot be serialized to JSON; the custom
    /// status is then left as it was.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// #[activity]
    /// async fn resize(_ctx: ActivityContext, image: u32) -> Result<u32, Error> {
    ///     Ok(image)
    /// }
    ///
    /// #[orchestrator]
    /// async fn resize_all(ctx: OrchestrationContext, images: u32) -> Result<u32, Error> {
    ///     for image in 0..images {
    ///         // Clients see the progress in the instance's status, before it ends.
    ///         ctx.set_custom_status(serde_json::json!({ "done": image, "of": images }))?;
    ///         ctx.call_activity(resize, image).await?;
    ///     }
    ///     Ok(images)
    /// }
    /// ```
    pub fn set_custom_status(&self, status: impl Serialize) -> Result<(), Error> {
        let status = Json::encode(&status).map_err(|error| {
            Error::new(
                ErrorKind::Serialization,
                format!("the custom status cannot be serialized to JSON: {error}"),
            )
        })?;
        self.state.borrow_mut().custom_status = Some(status);
        Ok(())
    }

    /// Calls `operation` of `entity` with a JSON input and waits for its result: the
    /// untyped form of `ctx.entity::<E>(key).operation(..)`, for an entity this program
    /// does not define as a type.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// use durable::Json;
    ///
    /// #[orchestrator]
    /// async fn read_counter(ctx: OrchestrationContext, key: String) -> Result<i64, Error> {
    ///     let counter = EntityId::new("Counter", key)
    ///         .map_err(|e| Error::new(ErrorKind::Application, e.to_string()))?;
    ///     ctx.call_entity::<i64>(&counter, "get", Json::null()).await
    /// }
    /// ```
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
    ///
    /// ```
    /// # use durable::prelude::*;
    /// use durable::Json;
    ///
    /// #[orchestrator]
    /// async fn count_visit(ctx: OrchestrationContext, page: String) -> Result<(), Error> {
    ///     let counter = EntityId::new("Counter", page)
    ///         .map_err(|e| Error::new(ErrorKind::Application, e.to_string()))?;
    ///     let one = Json::encode(&1i64).map_err(|e| Error::new(ErrorKind::Serialization, e.to_string()))?;
    ///     ctx.signal_entity(&counter, "add", one);
    ///     Ok(())
    /// }
    /// ```
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

    pub(crate) fn schedule_activity<T: DeserializeOwned>(
        &self,
        name: &str,
        input: Json,
        retry: Option<Attempt>,
    ) -> DurableTask<T> {
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
                retry,
            });
        DurableTask::scheduled(Rc::clone(&self.state), id)
    }

    /// The time of the current turn.
    pub(crate) fn now(&self) -> Timestamp {
        self.state.borrow().now
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
