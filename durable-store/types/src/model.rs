//! The records the runtime persists: history events (past-tense facts), instance
//! records, inbox messages, activity work items and timers.
//!
//! These types are the storage contract. Their postcard encoding is the on-disk format:
//! new enum variants go at the end of their enum, and any other change bumps the store's
//! `FORMAT_VERSION` (in `durable-store`).

use crate::ids::{EntityId, ExecutionId, InstanceId, Json, TaskId, Timestamp};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// One fact in the history of an orchestration execution.
///
/// A history is a sequence of *turns*; each begins with [`HistoryEvent::OrchestratorStarted`]
/// and holds the messages the turn consumed and the tasks it scheduled, in the order they
/// happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryEvent {
    /// The execution began with this input.
    ExecutionStarted {
        /// Registered name of the orchestrator.
        name: String,
        /// The orchestrator's input.
        input: Json,
        /// The orchestration that started this one as a sub-orchestration, if any.
        parent: Option<ParentRef>,
        /// 1 for the first execution of a start, then one more after each
        /// `continue_as_new`.
        generation: u32,
    },
    /// A turn began at this time; `current_utc_datetime` reads it.
    OrchestratorStarted {
        /// The time of the turn.
        at: Timestamp,
    },
    /// The orchestrator scheduled an activity.
    TaskScheduled {
        /// The task's sequence number.
        id: TaskId,
        /// Registered name of the activity.
        name: String,
        /// The activity's input.
        input: Json,
        /// For a retry: which attempt of which call it is. `None` for a first attempt.
        retry: Option<Attempt>,
    },
    /// An activity returned a value.
    TaskCompleted {
        /// The task's sequence number.
        id: TaskId,
        /// The activity's output.
        output: Json,
    },
    /// An activity returned an error or panicked.
    TaskFailed {
        /// The task's sequence number.
        id: TaskId,
        /// What went wrong.
        failure: Failure,
    },
    /// The orchestrator created a durable timer.
    TimerCreated {
        /// The task's sequence number.
        id: TaskId,
        /// When the timer is due.
        fire_at: Timestamp,
    },
    /// A durable timer came due.
    TimerFired {
        /// The task's sequence number.
        id: TaskId,
    },
    /// The orchestrator started a sub-orchestration.
    SubOrchestrationCreated {
        /// The task's sequence number.
        id: TaskId,
        /// Registered name of the child orchestrator.
        name: String,
        /// The child's instance id.
        instance: InstanceId,
        /// The child's input.
        input: Json,
    },
    /// A sub-orchestration completed.
    SubOrchestrationCompleted {
        /// The task's sequence number.
        id: TaskId,
        /// The child's output.
        output: Json,
    },
    /// A sub-orchestration failed or was terminated.
    SubOrchestrationFailed {
        /// The task's sequence number.
        id: TaskId,
        /// What went wrong.
        failure: Failure,
    },
    /// An external event arrived.
    EventRaised {
        /// The event's name.
        name: String,
        /// The event's payload.
        input: Json,
    },
    /// The execution returned a value.
    ExecutionCompleted {
        /// The orchestrator's output.
        output: Json,
    },
    /// The execution failed.
    ExecutionFailed {
        /// What went wrong.
        failure: Failure,
    },
    /// The execution ended by `continue_as_new`; the next execution starts with this input.
    ContinuedAsNew {
        /// Input of the next execution.
        input: Json,
    },
    /// The instance was terminated.
    ExecutionTerminated {
        /// The reason given by the caller.
        reason: String,
    },
    /// The orchestrator stopped waiting for a timer (it lost a `select`, or its task was
    /// dropped); the timer will not fire.
    TimerCancelled {
        /// The task's sequence number.
        id: TaskId,
    },
    /// The instance was suspended: it stores what arrives but runs no turn.
    ExecutionSuspended {
        /// The reason given by the caller.
        reason: String,
    },
    /// The instance was resumed.
    ExecutionResumed {
        /// The reason given by the caller.
        reason: String,
    },
    /// The orchestrator called an entity operation and waits for its result.
    EntityCalled {
        /// The task's sequence number.
        id: TaskId,
        /// The entity.
        entity: EntityId,
        /// The operation.
        operation: String,
        /// The operation's input.
        input: Json,
    },
    /// The orchestrator signalled an entity (fire-and-forget).
    EntitySignaled {
        /// The task's sequence number (a signal takes one, to be matched on replay).
        id: TaskId,
        /// The entity.
        entity: EntityId,
        /// The operation.
        operation: String,
        /// The operation's input.
        input: Json,
    },
    /// An entity operation the orchestrator called returned a value.
    EntityCompleted {
        /// The task's sequence number.
        id: TaskId,
        /// The operation's output.
        output: Json,
    },
    /// An entity operation the orchestrator called failed (its state is unchanged).
    EntityFailed {
        /// The task's sequence number.
        id: TaskId,
        /// What went wrong.
        failure: Failure,
    },
    /// The orchestrator asked for exclusive access to these entities (sorted).
    LocksRequested {
        /// The task's sequence number.
        id: TaskId,
        /// The entities, in the global lock order.
        entities: Vec<EntityId>,
    },
    /// Every entity of a lock request granted it.
    LocksGranted {
        /// The lock task's sequence number.
        id: TaskId,
        /// The entities now locked (so a grant that arrives too late can be undone).
        entities: Vec<EntityId>,
    },
    /// The orchestrator released the locks of a lock task.
    LocksReleased {
        /// The lock task's sequence number.
        id: TaskId,
    },
    /// The orchestrator stopped waiting for an activity (it lost a race, timed out, or
    /// its task was dropped): the activity is told to stop, and its result, if one still
    /// comes, is discarded.
    TaskCancelled {
        /// The task's sequence number.
        id: TaskId,
    },
}

/// Which attempt of one logical activity call a task is. Every attempt of a call made with
/// `call_activity_with_retry` is a task of its own; they share the first attempt's task,
/// which is what the activity's idempotency key is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The task of the call's first attempt.
    pub first: TaskId,
    /// The attempt's number: 2 for the first retry, and so on.
    pub number: u32,
}

impl HistoryEvent {
    /// A short name of the variant, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            HistoryEvent::ExecutionStarted { .. } => "ExecutionStarted",
            HistoryEvent::OrchestratorStarted { .. } => "OrchestratorStarted",
            HistoryEvent::TaskScheduled { .. } => "TaskScheduled",
            HistoryEvent::TaskCompleted { .. } => "TaskCompleted",
            HistoryEvent::TaskFailed { .. } => "TaskFailed",
            HistoryEvent::TimerCreated { .. } => "TimerCreated",
            HistoryEvent::TimerFired { .. } => "TimerFired",
            HistoryEvent::SubOrchestrationCreated { .. } => "SubOrchestrationCreated",
            HistoryEvent::SubOrchestrationCompleted { .. } => "SubOrchestrationCompleted",
            HistoryEvent::SubOrchestrationFailed { .. } => "SubOrchestrationFailed",
            HistoryEvent::EventRaised { .. } => "EventRaised",
            HistoryEvent::ExecutionCompleted { .. } => "ExecutionCompleted",
            HistoryEvent::ExecutionFailed { .. } => "ExecutionFailed",
            HistoryEvent::ContinuedAsNew { .. } => "ContinuedAsNew",
            HistoryEvent::ExecutionTerminated { .. } => "ExecutionTerminated",
            HistoryEvent::TimerCancelled { .. } => "TimerCancelled",
            HistoryEvent::ExecutionSuspended { .. } => "ExecutionSuspended",
            HistoryEvent::ExecutionResumed { .. } => "ExecutionResumed",
            HistoryEvent::EntityCalled { .. } => "EntityCalled",
            HistoryEvent::EntitySignaled { .. } => "EntitySignaled",
            HistoryEvent::EntityCompleted { .. } => "EntityCompleted",
            HistoryEvent::EntityFailed { .. } => "EntityFailed",
            HistoryEvent::LocksRequested { .. } => "LocksRequested",
            HistoryEvent::LocksGranted { .. } => "LocksGranted",
            HistoryEvent::LocksReleased { .. } => "LocksReleased",
            HistoryEvent::TaskCancelled { .. } => "TaskCancelled",
        }
    }
}

/// The parent of a sub-orchestration: where its result goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// The parent instance.
    pub instance: InstanceId,
    /// The parent's execution that is waiting.
    pub execution: ExecutionId,
    /// The parent's task that is waiting.
    pub task: TaskId,
}

/// What went wrong in an activity, an orchestrator or the runtime on their behalf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The category of the failure.
    pub kind: FailureKind,
    /// A message for people.
    pub message: String,
    /// Optional structured details supplied by user code.
    pub details: Option<Json>,
    /// The failure that caused this one, if any (an activity's own error beneath the
    /// orchestrator's "activity failed"). At most [`FAILURE_CAUSES_MAX`] are stored.
    #[serde(
        serialize_with = "causes::serialize",
        deserialize_with = "causes::deserialize"
    )]
    pub cause: Option<Box<Failure>>,
}

/// The longest chain of causes a stored [`Failure`] keeps. Causes beyond it are dropped
/// when the failure is stored, and a record that claims more is corrupt: the chain is the
/// one recursive part of the records, and decoding it must not overflow the stack however
/// hostile the bytes.
pub const FAILURE_CAUSES_MAX: usize = 128;

/// Bounded (de)serialization of [`Failure::cause`]: a per-thread count of how many causes
/// deep the (de)serializer is. Serde drives both directions recursively on one thread.
mod causes {
    use super::{FAILURE_CAUSES_MAX, Failure};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::cell::Cell;

    thread_local! {
        static DEPTH: Cell<usize> = const { Cell::new(0) };
        /// Set when a decode on this thread met a chain longer than the maximum.
        static TOO_DEEP: Cell<bool> = const { Cell::new(false) };
    }

    /// One level of depth, given back when dropped (also when a panic unwinds).
    struct Level;

    impl Level {
        fn enter() -> Option<Level> {
            DEPTH.with(|depth| {
                (depth.get() < FAILURE_CAUSES_MAX).then(|| {
                    depth.set(depth.get() + 1);
                    Level
                })
            })
        }
    }

    impl Drop for Level {
        fn drop(&mut self) {
            DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
        }
    }

    pub(super) fn serialize<S: Serializer>(
        cause: &Option<Box<Failure>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match Level::enter() {
            Some(_level) => cause.serialize(serializer),
            None => None::<Box<Failure>>.serialize(serializer),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Box<Failure>>, D::Error> {
        match Level::enter() {
            Some(_level) => Option::<Box<Failure>>::deserialize(deserializer),
            // At the limit only "no further cause" is valid.
            None => Option::<NoMoreCauses>::deserialize(deserializer).map(|_| None),
        }
    }

    /// A cause where none may be: always an error.
    struct NoMoreCauses;

    impl<'de> Deserialize<'de> for NoMoreCauses {
        fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            TOO_DEEP.with(|flag| flag.set(true));
            Err(serde::de::Error::custom(format_args!(
                "a failure's causes nest deeper than {FAILURE_CAUSES_MAX}"
            )))
        }
    }

    /// Runs a decode and says whether it met a chain of causes that is too long (some
    /// formats, postcard among them, drop custom error messages).
    pub fn decoding<T>(decode: impl FnOnce() -> T) -> (T, bool) {
        TOO_DEEP.with(|flag| flag.set(false));
        let decoded = decode();
        (decoded, TOO_DEEP.with(|flag| flag.replace(false)))
    }
}

pub use causes::decoding as decoding_causes;

impl Failure {
    /// A failure of `kind` with `message` and nothing else.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            details: None,
            cause: None,
        }
    }
}

impl fmt::Display for Failure {
    /// The message followed by each cause's message: `activity `charge` failed: card declined`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut cause = &self.cause;
        while let Some(failure) = cause {
            write!(f, ": {}", failure.message)?;
            cause = &failure.cause;
        }
        Ok(())
    }
}

/// The category of a [`Failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailureKind {
    /// User code returned an error.
    Application,
    /// User code panicked.
    Panic,
    /// An activity failed (the cause holds the activity's error).
    ActivityFailed,
    /// A sub-orchestration failed (the cause holds its failure).
    SubOrchestrationFailed,
    /// Replay diverged from the recorded history.
    NonDeterminism,
    /// The orchestrator or activity is not registered with the runtime.
    NotRegistered,
    /// An input or output did not match the declared type.
    Serialization,
    /// The instance was terminated.
    Terminated,
    /// The runtime could not run the work (for example a store error).
    Internal,
    /// An entity operation failed (the cause holds its error); the entity's state is as it
    /// was before the operation.
    EntityOperationFailed,
    /// An orchestration broke a rule of critical sections (nested locks, a call to an
    /// entity it did not lock, a sub-orchestration while holding locks): the call fails at
    /// once instead of risking a deadlock.
    LockingRules,
    /// A configured limit was exceeded (a payload's size, the actions of one turn); the
    /// message names the limit and what to do instead.
    LimitExceeded,
    /// A task did not finish within the time the orchestrator gave it (a timeout of a
    /// call or of a retry policy); it was cancelled.
    TimedOut,
}

/// The lifecycle state of an orchestration instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuntimeStatus {
    /// Accepted, but no turn has run yet.
    Pending,
    /// Started and not ended.
    Running,
    /// Returned a value.
    Completed,
    /// Ended with an error.
    Failed,
    /// Ended by a terminate request.
    Terminated,
    /// Suspended: receives messages but runs no turn until resumed.
    Suspended,
}

impl RuntimeStatus {
    /// Every status, in declaration order.
    pub const ALL: [RuntimeStatus; 6] = [
        RuntimeStatus::Pending,
        RuntimeStatus::Running,
        RuntimeStatus::Completed,
        RuntimeStatus::Failed,
        RuntimeStatus::Terminated,
        RuntimeStatus::Suspended,
    ];

    /// Whether the instance has ended (completed, failed or terminated).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RuntimeStatus::Completed | RuntimeStatus::Failed | RuntimeStatus::Terminated
        )
    }

    /// The status's name as Durable Functions spells it (`"Running"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Pending => "Pending",
            RuntimeStatus::Running => "Running",
            RuntimeStatus::Completed => "Completed",
            RuntimeStatus::Failed => "Failed",
            RuntimeStatus::Terminated => "Terminated",
            RuntimeStatus::Suspended => "Suspended",
        }
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RuntimeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuntimeStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown runtime status `{s}`; expected one of Pending, Running, Completed, Failed, Terminated, Suspended"
                )
            })
    }
}

/// The stored state of one instance: which execution is current, its status and result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The instance id.
    pub id: InstanceId,
    /// Registered name of the orchestrator.
    pub name: String,
    /// The current execution.
    pub execution: ExecutionId,
    /// Lifecycle state.
    pub status: RuntimeStatus,
    /// Input of the current execution.
    pub input: Json,
    /// Output, once completed.
    pub output: Option<Json>,
    /// Failure, once failed or terminated.
    pub failure: Option<Failure>,
    /// The value last set with `set_custom_status`.
    pub custom_status: Option<Json>,
    /// When the instance was first created (kept across executions).
    pub created_at: Timestamp,
    /// When the record last changed.
    pub last_updated_at: Timestamp,
    /// Number of history events of the current execution; the next event's sequence number.
    pub history_len: u64,
    /// The parent orchestration, for a sub-orchestration.
    pub parent: Option<ParentRef>,
    /// 1 for the first execution of a start, then one more after each `continue_as_new`.
    pub generation: u32,
    /// For an instance started with a scheduled start: when it starts. Its timer is stored
    /// under this due time.
    pub scheduled_start: Option<Timestamp>,
}

/// A message waiting in an instance's inbox, to be consumed by its next turn (an
/// orchestration) or round (an entity).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// The receiving instance (for an entity, its `@name@key`).
    pub target: InstanceId,
    /// What the message says.
    pub body: Message,
}

/// What an inbox message says: an event for an orchestration's history, or a request to
/// an entity. Entity messages never enter a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// An input for an orchestration: a start, a task's result, an external event, a
    /// lifecycle request. Its turn records the event in the history.
    Event {
        /// The receiving execution; `None` for whichever is current.
        execution: Option<ExecutionId>,
        /// The event.
        event: HistoryEvent,
    },
    /// A request to an entity.
    Entity(EntityMessage),
}

/// A request to an entity: run an operation, take a lock, release it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntityMessage {
    /// Run an operation.
    Operation {
        /// The operation.
        operation: String,
        /// Its input.
        input: Json,
        /// The orchestration that sent it (and the task), if one did.
        caller: Option<EntityCaller>,
        /// Whether the caller waits for the result (a call) or not (a signal).
        reply: bool,
    },
    /// Lock the entity for `holder`, then pass the request on to the next entity of
    /// `entities` (or tell the holder, after the last).
    LockRequest {
        /// The orchestration asking.
        holder: EntityCaller,
        /// All the entities of the request, in lock order.
        entities: Vec<EntityId>,
        /// The position of the receiving entity in `entities`.
        position: u32,
    },
    /// `holder` releases its lock.
    LockRelease {
        /// The orchestration that held the lock.
        holder: EntityCaller,
    },
}

impl EntityMessage {
    /// A short name of the variant, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            EntityMessage::Operation { .. } => "Operation",
            EntityMessage::LockRequest { .. } => "LockRequest",
            EntityMessage::LockRelease { .. } => "LockRelease",
        }
    }
}

/// Where an inbox message is stored: its instance and a sequence number that orders the
/// instance's messages by arrival. Keys order as their encodings do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboxKey {
    /// The receiving instance.
    pub instance: InstanceId,
    /// Arrival order (unique per store).
    pub seq: u64,
}

/// An activity to run: stored when scheduled, deleted when its result is committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityWorkItem {
    /// The orchestration that scheduled it.
    pub instance: InstanceId,
    /// The execution that scheduled it.
    pub execution: ExecutionId,
    /// The task's sequence number in that execution.
    pub task: TaskId,
    /// Registered name of the activity.
    pub name: String,
    /// The activity's input.
    pub input: Json,
    /// For a retry: which attempt of which call it is.
    pub retry: Option<Attempt>,
    /// How many times the process ended abruptly (a crash, a kill) while this activity
    /// may have been running, as counted by the start-ups after. An activity that crashes
    /// the process is failed once this passes the runtime's `max_activity_restarts`,
    /// instead of crashing it forever.
    pub restarts: u32,
    /// Whether it runs in isolation: after it was found unfinished by two start-ups, it
    /// runs only when no other isolated activity runs, so that a crash is blamed on it
    /// alone and not on its neighbours.
    pub isolated: bool,
}

impl ActivityWorkItem {
    /// The work item of task `task` of an execution, not yet found unfinished by any
    /// start-up.
    pub fn new(
        instance: InstanceId,
        execution: ExecutionId,
        task: TaskId,
        name: String,
        input: Json,
        retry: Option<Attempt>,
    ) -> ActivityWorkItem {
        ActivityWorkItem {
            instance,
            execution,
            task,
            name,
            input,
            retry,
            restarts: 0,
            isolated: false,
        }
    }

    /// This work item's key.
    pub fn key(&self) -> ActivityKey {
        ActivityKey {
            instance: self.instance.clone(),
            execution: self.execution,
            task: self.task,
        }
    }
}

/// Where an activity work item is stored. Keys order as their encodings do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ActivityKey {
    /// The orchestration that scheduled it.
    pub instance: InstanceId,
    /// The execution that scheduled it.
    pub execution: ExecutionId,
    /// The task's sequence number.
    pub task: TaskId,
}

/// What a durable timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimerPurpose {
    /// A timer task of the execution (`create_timer`, `sleep`, a retry's back-off).
    Task(TaskId),
    /// The scheduled start of the execution (a start with a time): it starts the
    /// execution when it fires.
    ScheduledStart,
}

/// A durable timer: stored when created, deleted when its firing is committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRecord {
    /// When the timer is due.
    pub fire_at: Timestamp,
    /// The orchestration that created it.
    pub instance: InstanceId,
    /// The execution that created it.
    pub execution: ExecutionId,
    /// What it is for.
    pub purpose: TimerPurpose,
}

impl TimerRecord {
    /// This timer's key.
    pub fn key(&self) -> TimerKey {
        TimerKey {
            fire_at: self.fire_at,
            instance: self.instance.clone(),
            execution: self.execution,
            purpose: self.purpose,
        }
    }
}

/// Where a timer is stored; keys order by due time first, and in all as their encodings
/// do (so a key from memory can resume a scan of the store).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    /// When the timer is due.
    pub fire_at: Timestamp,
    /// The orchestration that created it.
    pub instance: InstanceId,
    /// The execution that created it.
    pub execution: ExecutionId,
    /// What it is for.
    pub purpose: TimerPurpose,
}

/// Orders instance ids as keys encode them: by length first (the length prefix), then
/// bytewise.
fn cmp_encoded(a: &InstanceId, b: &InstanceId) -> Ordering {
    let (a, b) = (a.as_str().as_bytes(), b.as_str().as_bytes());
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for InboxKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_encoded(&self.instance, &other.instance).then_with(|| self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for InboxKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ActivityKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_encoded(&self.instance, &other.instance)
            .then_with(|| self.execution.cmp(&other.execution))
            .then_with(|| self.task.cmp(&other.task))
    }
}

impl PartialOrd for ActivityKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TimerKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.fire_at
            .cmp(&other.fire_at)
            .then_with(|| cmp_encoded(&self.instance, &other.instance))
            .then_with(|| self.execution.cmp(&other.execution))
            .then_with(|| self.purpose.cmp(&other.purpose))
    }
}

impl PartialOrd for TimerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An orchestration execution (and, for a call, its task) on the other side of an entity
/// message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityCaller {
    /// The orchestration instance.
    pub instance: InstanceId,
    /// Its execution.
    pub execution: ExecutionId,
    /// The task waiting (the call, or the lock request).
    pub task: TaskId,
}

/// The stored state of one entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// The entity.
    pub id: EntityId,
    /// Its state as JSON; `None` once deleted (the next operation starts from `Default`).
    pub state: Option<Json>,
    /// The orchestration holding it in a critical section.
    pub lock: Option<EntityCaller>,
    /// When the state last changed.
    pub last_modified: Timestamp,
}

/// A filter for the instances a store lists (`Store::list_instances` of `durable-store`);
/// every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceQuery {
    /// Statuses to include; `None` for all.
    pub statuses: Option<Vec<RuntimeStatus>>,
    /// Orchestrator name, exactly.
    pub name: Option<String>,
    /// Only instances created at or after this time.
    pub created_from: Option<Timestamp>,
    /// Only instances created at or before this time.
    pub created_to: Option<Timestamp>,
    /// Only instance ids with this prefix.
    pub id_prefix: Option<String>,
    /// Only instances that ended (completed, failed or terminated) before this time.
    pub ended_before: Option<Timestamp>,
}

impl InstanceQuery {
    /// Whether `record` passes this filter.
    pub fn matches(&self, record: &InstanceRecord) -> bool {
        self.statuses
            .as_ref()
            .is_none_or(|statuses| statuses.contains(&record.status))
            && self.name.as_ref().is_none_or(|name| *name == record.name)
            && self
                .created_from
                .is_none_or(|from| record.created_at >= from)
            && self.created_to.is_none_or(|to| record.created_at <= to)
            && self
                .id_prefix
                .as_ref()
                .is_none_or(|prefix| record.id.as_str().starts_with(prefix.as_str()))
            && self
                .ended_before
                .is_none_or(|before| record.status.is_terminal() && record.last_updated_at < before)
    }
}
