//! What one turn of an execution produces: a [`Turn`] of history events, the [`Action`]s
//! the code asked for (imperative commands) and, at the end, the execution's [`Outcome`].
//! Each action has exactly one history event that records it; a [`Recording`] is what the
//! two have in common, which is what replay compares.

use durable_types::{
    Attempt, EntityId, Failure, HistoryEvent, InstanceId, Json, TaskId, Timestamp,
};

/// What one live turn produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Turn {
    /// Events to append to the history, beginning with `OrchestratorStarted`.
    pub events: Vec<HistoryEvent>,
    /// Work to perform once the turn has committed.
    pub actions: Vec<Action>,
    /// How the execution ended, if it ended in this turn.
    pub outcome: Option<Outcome>,
    /// Inputs that did not apply (a duplicate or stale completion) and why; they are not
    /// appended to the history.
    pub discarded: Vec<(HistoryEvent, &'static str)>,
    /// Inputs not reached because the execution ended earlier in the turn. After
    /// `continue_as_new` the runtime carries external events over to the next execution.
    pub unprocessed: Vec<HistoryEvent>,
}

impl Turn {
    /// Whether the turn recorded nothing but its `OrchestratorStarted` marker (every input
    /// was discarded): then nothing happened, and nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.events.len() <= 1 && self.actions.is_empty() && self.outcome.is_none()
    }
}

/// A command produced by orchestrator code during a turn, performed by the runtime after
/// the turn commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run an activity.
    ScheduleActivity {
        /// The task's sequence number.
        id: TaskId,
        /// Registered activity name.
        name: String,
        /// The activity's input.
        input: Json,
        /// For a retry: which attempt of which call it is.
        retry: Option<Attempt>,
    },
    /// Stop waiting for an activity: tell it to stop, and discard its result.
    CancelActivity {
        /// The activity's task sequence number.
        id: TaskId,
    },
    /// Fire a timer at `fire_at`.
    CreateTimer {
        /// The task's sequence number.
        id: TaskId,
        /// When it is due.
        fire_at: Timestamp,
    },
    /// Cancel a timer the orchestrator no longer waits for.
    CancelTimer {
        /// The timer's task sequence number.
        id: TaskId,
        /// When it was due (part of its key in the store).
        fire_at: Timestamp,
    },
    /// Call an entity operation and wait for its result.
    CallEntity {
        /// The task's sequence number.
        id: TaskId,
        /// The entity.
        entity: EntityId,
        /// The operation.
        operation: String,
        /// Its input.
        input: Json,
    },
    /// Signal an entity operation (fire-and-forget).
    SignalEntity {
        /// The task's sequence number.
        id: TaskId,
        /// The entity.
        entity: EntityId,
        /// The operation.
        operation: String,
        /// Its input.
        input: Json,
    },
    /// Lock these entities (sorted) for the orchestration.
    AcquireLocks {
        /// The lock task's sequence number.
        id: TaskId,
        /// The entities, in lock order.
        entities: Vec<EntityId>,
    },
    /// Release the locks of lock task `id`.
    ReleaseLocks {
        /// The lock task's sequence number.
        id: TaskId,
        /// The entities it locked.
        entities: Vec<EntityId>,
    },
    /// Start a sub-orchestration.
    StartSubOrchestration {
        /// The task's sequence number.
        id: TaskId,
        /// Registered orchestrator name.
        name: String,
        /// The child's instance id.
        instance: InstanceId,
        /// The child's input.
        input: Json,
    },
}

impl Action {
    /// The history event that records this action.
    pub fn to_event(&self) -> HistoryEvent {
        match self {
            Action::ScheduleActivity {
                id,
                name,
                input,
                retry,
            } => HistoryEvent::TaskScheduled {
                id: *id,
                name: name.clone(),
                input: input.clone(),
                retry: *retry,
            },
            Action::CancelActivity { id } => HistoryEvent::TaskCancelled { id: *id },
            Action::CreateTimer { id, fire_at } => HistoryEvent::TimerCreated {
                id: *id,
                fire_at: *fire_at,
            },
            Action::CancelTimer { id, .. } => HistoryEvent::TimerCancelled { id: *id },
            Action::CallEntity {
                id,
                entity,
                operation,
                input,
            } => HistoryEvent::EntityCalled {
                id: *id,
                entity: entity.clone(),
                operation: operation.clone(),
                input: input.clone(),
            },
            Action::SignalEntity {
                id,
                entity,
                operation,
                input,
            } => HistoryEvent::EntitySignaled {
                id: *id,
                entity: entity.clone(),
                operation: operation.clone(),
                input: input.clone(),
            },
            Action::AcquireLocks { id, entities } => HistoryEvent::LocksRequested {
                id: *id,
                entities: entities.clone(),
            },
            Action::ReleaseLocks { id, .. } => HistoryEvent::LocksReleased { id: *id },
            Action::StartSubOrchestration {
                id,
                name,
                instance,
                input,
            } => HistoryEvent::SubOrchestrationCreated {
                id: *id,
                name: name.clone(),
                instance: instance.clone(),
                input: input.clone(),
            },
        }
    }

    /// Describes the action for a nondeterminism message.
    pub fn describe(&self) -> String {
        self.recording().describe()
    }

    /// Whether `event` records this action. Inputs and due times are not compared: they may
    /// legitimately differ on replay (a serializer change, the clock of a retried turn); the
    /// kind, the task id, the name and the child instance must not.
    pub fn is_recorded_by(&self, event: &HistoryEvent) -> bool {
        Recording::of(event).is_some_and(|recorded| recorded == self.recording())
    }

    /// What replay compares of this action.
    pub fn recording(&self) -> Recording<'_> {
        match self {
            Action::ScheduleActivity { id, name, .. } => Recording::Activity { id: *id, name },
            Action::CancelActivity { id } => Recording::ActivityCancellation { id: *id },
            Action::CreateTimer { id, .. } => Recording::Timer { id: *id },
            Action::CancelTimer { id, .. } => Recording::TimerCancellation { id: *id },
            Action::CallEntity {
                id,
                entity,
                operation,
                ..
            } => Recording::EntityCall {
                id: *id,
                entity,
                operation,
            },
            Action::SignalEntity {
                id,
                entity,
                operation,
                ..
            } => Recording::EntitySignal {
                id: *id,
                entity,
                operation,
            },
            Action::AcquireLocks { id, .. } => Recording::LockRequest { id: *id },
            Action::ReleaseLocks { id, .. } => Recording::LockRelease { id: *id },
            Action::StartSubOrchestration {
                id, name, instance, ..
            } => Recording::SubOrchestration {
                id: *id,
                name,
                instance,
            },
        }
    }
}

/// What an action and the history event that records it have in common: what replay
/// compares (kind, task id, names, child instance), and what a nondeterminism message names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recording<'a> {
    /// An activity call.
    Activity {
        /// Its task.
        id: TaskId,
        /// The activity.
        name: &'a str,
    },
    /// The cancellation of an activity.
    ActivityCancellation {
        /// The activity's task.
        id: TaskId,
    },
    /// A durable timer.
    Timer {
        /// Its task.
        id: TaskId,
    },
    /// The cancellation of a timer.
    TimerCancellation {
        /// The timer's task.
        id: TaskId,
    },
    /// A call of an entity operation.
    EntityCall {
        /// Its task.
        id: TaskId,
        /// The entity.
        entity: &'a EntityId,
        /// The operation.
        operation: &'a str,
    },
    /// A signal to an entity.
    EntitySignal {
        /// Its task.
        id: TaskId,
        /// The entity.
        entity: &'a EntityId,
        /// The operation.
        operation: &'a str,
    },
    /// A request for entity locks.
    LockRequest {
        /// Its task.
        id: TaskId,
    },
    /// The release of a lock task's locks.
    LockRelease {
        /// The lock task.
        id: TaskId,
    },
    /// A sub-orchestration.
    SubOrchestration {
        /// Its task.
        id: TaskId,
        /// The orchestrator.
        name: &'a str,
        /// The child's instance id.
        instance: &'a InstanceId,
    },
}

impl<'a> Recording<'a> {
    /// What `event` records, if it records an action.
    pub fn of(event: &'a HistoryEvent) -> Option<Recording<'a>> {
        Some(match event {
            HistoryEvent::TaskScheduled { id, name, .. } => Recording::Activity { id: *id, name },
            HistoryEvent::TaskCancelled { id } => Recording::ActivityCancellation { id: *id },
            HistoryEvent::TimerCreated { id, .. } => Recording::Timer { id: *id },
            HistoryEvent::TimerCancelled { id } => Recording::TimerCancellation { id: *id },
            HistoryEvent::EntityCalled {
                id,
                entity,
                operation,
                ..
            } => Recording::EntityCall {
                id: *id,
                entity,
                operation,
            },
            HistoryEvent::EntitySignaled {
                id,
                entity,
                operation,
                ..
            } => Recording::EntitySignal {
                id: *id,
                entity,
                operation,
            },
            HistoryEvent::LocksRequested { id, .. } => Recording::LockRequest { id: *id },
            HistoryEvent::LocksReleased { id } => Recording::LockRelease { id: *id },
            HistoryEvent::SubOrchestrationCreated {
                id, name, instance, ..
            } => Recording::SubOrchestration {
                id: *id,
                name,
                instance,
            },
            _ => return None,
        })
    }

    /// Describes it for a nondeterminism message: "activity `charge` as task 3".
    pub fn describe(&self) -> String {
        match self {
            Recording::Activity { id, name } => format!("activity `{name}` as task {id}"),
            Recording::ActivityCancellation { id } => {
                format!("the cancellation of activity task {id}")
            }
            Recording::Timer { id } => format!("a timer as task {id}"),
            Recording::TimerCancellation { id } => format!("the cancellation of timer {id}"),
            Recording::EntityCall {
                id,
                entity,
                operation,
            } => format!("a call of `{operation}` on entity `{entity}` as task {id}"),
            Recording::EntitySignal {
                id,
                entity,
                operation,
            } => format!("a signal of `{operation}` to entity `{entity}` as task {id}"),
            Recording::LockRequest { id } => format!("a lock request as task {id}"),
            Recording::LockRelease { id } => format!("the release of the locks of task {id}"),
            Recording::SubOrchestration { id, name, .. } => {
                format!("sub-orchestration `{name}` as task {id}")
            }
        }
    }
}

/// Describes a history event that records an action, for a nondeterminism message (any
/// other event by its kind).
pub(crate) fn describe_recorded(event: &HistoryEvent) -> String {
    Recording::of(event).map_or_else(|| event.kind().to_owned(), |recorded| recorded.describe())
}

/// How an execution ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The orchestrator returned a value.
    Completed(Json),
    /// The orchestrator returned an error, panicked, or diverged from its history.
    Failed(Failure),
    /// The orchestrator called `continue_as_new` with this input.
    ContinuedAsNew(Json),
    /// A terminate request ended it.
    Terminated(String),
}

impl Outcome {
    /// The history event that records this outcome.
    pub fn to_event(&self) -> HistoryEvent {
        match self {
            Outcome::Completed(output) => HistoryEvent::ExecutionCompleted {
                output: output.clone(),
            },
            Outcome::Failed(failure) => HistoryEvent::ExecutionFailed {
                failure: failure.clone(),
            },
            Outcome::ContinuedAsNew(input) => HistoryEvent::ContinuedAsNew {
                input: input.clone(),
            },
            Outcome::Terminated(reason) => HistoryEvent::ExecutionTerminated {
                reason: reason.clone(),
            },
        }
    }
}
