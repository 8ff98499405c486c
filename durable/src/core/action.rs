//! [`Action`]: what the orchestrator code asks for (imperative), and [`Outcome`]: how an
//! execution ended. Each action has exactly one history event that records it.

use durable_store::{EntityId, Failure, HistoryEvent, InstanceId, Json, TaskId, Timestamp};

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
            Action::ScheduleActivity { id, name, input } => HistoryEvent::TaskScheduled {
                id: *id,
                name: name.clone(),
                input: input.clone(),
            },
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
        match self {
            Action::ScheduleActivity { id, name, .. } => format!("activity `{name}` as task {id}"),
            Action::CreateTimer { id, .. } => format!("a timer as task {id}"),
            Action::CancelTimer { id, .. } => format!("the cancellation of timer {id}"),
            Action::CallEntity {
                id,
                entity,
                operation,
                ..
            } => format!("a call of `{operation}` on entity `{entity}` as task {id}"),
            Action::SignalEntity {
                id,
                entity,
                operation,
                ..
            } => format!("a signal of `{operation}` to entity `{entity}` as task {id}"),
            Action::AcquireLocks { id, .. } => format!("a lock request as task {id}"),
            Action::ReleaseLocks { id, .. } => format!("the release of the locks of task {id}"),
            Action::StartSubOrchestration { id, name, .. } => {
                format!("sub-orchestration `{name}` as task {id}")
            }
        }
    }

    /// Whether `event` records this action. Inputs and due times are not compared: they may
    /// legitimately differ on replay (a serializer change, the clock of a retried turn); the
    /// kind, the task id, the name and the child instance must not.
    pub fn is_recorded_by(&self, event: &HistoryEvent) -> bool {
        match (self, event) {
            (
                Action::ScheduleActivity { id, name, .. },
                HistoryEvent::TaskScheduled {
                    id: recorded_id,
                    name: recorded_name,
                    ..
                },
            ) => id == recorded_id && name == recorded_name,
            (Action::CreateTimer { id, .. }, HistoryEvent::TimerCreated { id: recorded, .. })
            | (Action::CancelTimer { id, .. }, HistoryEvent::TimerCancelled { id: recorded })
            | (
                Action::AcquireLocks { id, .. },
                HistoryEvent::LocksRequested { id: recorded, .. },
            )
            | (Action::ReleaseLocks { id, .. }, HistoryEvent::LocksReleased { id: recorded }) => {
                id == recorded
            }
            (
                Action::CallEntity {
                    id,
                    entity,
                    operation,
                    ..
                },
                HistoryEvent::EntityCalled {
                    id: recorded_id,
                    entity: recorded_entity,
                    operation: recorded_operation,
                    ..
                },
            )
            | (
                Action::SignalEntity {
                    id,
                    entity,
                    operation,
                    ..
                },
                HistoryEvent::EntitySignaled {
                    id: recorded_id,
                    entity: recorded_entity,
                    operation: recorded_operation,
                    ..
                },
            ) => id == recorded_id && entity == recorded_entity && operation == recorded_operation,
            (
                Action::StartSubOrchestration {
                    id, name, instance, ..
                },
                HistoryEvent::SubOrchestrationCreated {
                    id: recorded_id,
                    name: recorded_name,
                    instance: recorded_instance,
                    ..
                },
            ) => id == recorded_id && name == recorded_name && instance == recorded_instance,
            _ => false,
        }
    }
}

/// Describes a history event that records an action, for a nondeterminism message.
pub(crate) fn describe_recorded(event: &HistoryEvent) -> String {
    match event {
        HistoryEvent::TaskScheduled { id, name, .. } => format!("activity `{name}` as task {id}"),
        HistoryEvent::TimerCreated { id, .. } => format!("a timer as task {id}"),
        HistoryEvent::TimerCancelled { id } => format!("the cancellation of timer {id}"),
        HistoryEvent::EntityCalled {
            id,
            entity,
            operation,
            ..
        } => format!("a call of `{operation}` on entity `{entity}` as task {id}"),
        HistoryEvent::EntitySignaled {
            id,
            entity,
            operation,
            ..
        } => format!("a signal of `{operation}` to entity `{entity}` as task {id}"),
        HistoryEvent::LocksRequested { id, .. } => format!("a lock request as task {id}"),
        HistoryEvent::LocksReleased { id } => format!("the release of the locks of task {id}"),
        HistoryEvent::SubOrchestrationCreated { id, name, .. } => {
            format!("sub-orchestration `{name}` as task {id}")
        }
        other => other.kind().to_owned(),
    }
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
