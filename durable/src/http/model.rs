//! The JSON bodies of the management API, as explicit types converted from the client's
//! and the store's records. The store's types are never serialized onto the wire: a field
//! renamed in a stored record cannot move the wire, and a new kind of history event does
//! not compile until it is given a shape here.
//!
//! Fields are declared in wire order. A history event's keys are in alphabetical order,
//! as this API has always sent them; the other bodies follow Durable Functions' order.

use super::time::format_time;
use crate::client::{EntityStatus, InstanceStatus};
use durable_types::{
    EntityId, FAILURE_CAUSES_MAX, Failure, FailureKind, HistoryEvent, InstanceId, Json, ParentRef,
    RuntimeStatus, TaskId, Timestamp,
};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// An instance as Durable Functions' status endpoints show it (`GET instances/{id}`, the
/// items of `GET instances`, and a start that waited for a failure).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceStatusBody<'a> {
    name: &'a str,
    instance_id: &'a str,
    runtime_status: &'static str,
    input: Option<&'a RawValue>,
    custom_status: Option<&'a RawValue>,
    output: Option<Box<RawValue>>,
    created_time: String,
    last_updated_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    history_events: Option<Vec<HistoryEventBody>>,
}

impl<'a> InstanceStatusBody<'a> {
    /// `status`, its input only with `show_input`, and `history_events` when given.
    pub(crate) fn of(
        status: &'a InstanceStatus,
        show_input: bool,
        history_events: Option<Vec<HistoryEventBody>>,
    ) -> InstanceStatusBody<'a> {
        InstanceStatusBody {
            name: &status.name,
            instance_id: status.instance_id.as_str(),
            // Durable Functions' spelling, which `runtimeStatus` filters are parsed with too.
            runtime_status: status.runtime_status.as_str(),
            input: if show_input { raw(&status.input) } else { None },
            custom_status: status.custom_status.as_ref().and_then(raw),
            output: output(status),
            created_time: format_time(status.created_at),
            last_updated_time: format_time(status.last_updated_at),
            history_events,
        }
    }
}

/// The output of a completed instance; a failed one shows its error (with its causes), a
/// terminated one the reason, as a JSON string.
fn output(status: &InstanceStatus) -> Option<Box<RawValue>> {
    let text = match status.runtime_status {
        RuntimeStatus::Completed => {
            let output = status.output.as_ref()?;
            return RawValue::from_string(output.to_string()).ok();
        }
        RuntimeStatus::Failed => status.failure.as_ref()?.to_string(),
        RuntimeStatus::Terminated => status.failure.as_ref()?.message.clone(),
        RuntimeStatus::Pending | RuntimeStatus::Running | RuntimeStatus::Suspended => {
            return None;
        }
    };
    serde_json::to_string(&text)
        .ok()
        .and_then(|json| RawValue::from_string(json).ok())
}

/// A stored JSON document as it is, for bodies that show payloads verbatim.
pub(crate) fn raw(json: &Json) -> Option<&RawValue> {
    serde_json::from_str(json.as_str()).ok()
}

/// One history event as `showHistory=true` shows it: Durable Functions' `EventType` and
/// `Timestamp` (of the turn that recorded it), and the fields its kind has
/// ([`with_fields`]); the others are left out. `Input` and `Result` appear only with
/// `showHistoryOutput=true`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HistoryEventBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    entities: Option<Vec<HistoryEntityId>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity: Option<HistoryEntityId>,
    event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<FailureBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fire_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<String>,
    #[serde(skip_serializing_if = "ParentField::is_not_shown")]
    parent: ParentField,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_scheduled_id: Option<u64>,
    timestamp: String,
}

/// An entity named in a history event.
#[derive(Serialize)]
struct HistoryEntityId {
    key: String,
    name: String,
}

impl HistoryEntityId {
    fn of(entity: &EntityId) -> HistoryEntityId {
        HistoryEntityId {
            key: entity.key().to_owned(),
            name: entity.name().to_owned(),
        }
    }
}

/// The `parent` field of a history event: shown on `ExecutionStarted` only, as `null` for
/// an orchestration that is not a sub-orchestration.
#[derive(Default)]
enum ParentField {
    /// Not shown (any other event).
    #[default]
    NotShown,
    /// Shown as `null`.
    NoParent,
    /// The parent.
    Parent(ParentBody),
}

impl ParentField {
    fn is_not_shown(&self) -> bool {
        matches!(self, ParentField::NotShown)
    }
}

impl Serialize for ParentField {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ParentField::NotShown | ParentField::NoParent => serializer.serialize_none(),
            ParentField::Parent(parent) => parent.serialize(serializer),
        }
    }
}

/// The parent of a sub-orchestration, in its `ExecutionStarted` event.
#[derive(Serialize)]
struct ParentBody {
    execution: u64,
    instance: String,
    task: u64,
}

/// What went wrong, in a history event: the failure and its chain of causes.
#[derive(Serialize)]
struct FailureBody {
    cause: Option<Box<FailureBody>>,
    /// The details' JSON text, as a string.
    details: Option<String>,
    kind: Cow<'static, str>,
    message: String,
}

impl FailureBody {
    /// `failure`, `depth` causes below the one an event holds; at most
    /// [`FAILURE_CAUSES_MAX`] causes are shown, as many as a stored failure keeps.
    fn of(failure: &Failure, depth: usize) -> FailureBody {
        let cause = failure
            .cause
            .as_deref()
            .filter(|_| depth < FAILURE_CAUSES_MAX)
            .map(|cause| Box::new(FailureBody::of(cause, depth + 1)));
        FailureBody {
            cause,
            details: failure
                .details
                .as_ref()
                .map(|json| json.as_str().to_owned()),
            kind: failure_kind(failure.kind),
            message: failure.message.clone(),
        }
    }
}

/// The kind's name. Kinds added to the store after this list are shown by their Rust
/// name, which is what every kind showed before the list was written.
fn failure_kind(kind: FailureKind) -> Cow<'static, str> {
    Cow::Borrowed(match kind {
        FailureKind::Application => "Application",
        FailureKind::Panic => "Panic",
        FailureKind::ActivityFailed => "ActivityFailed",
        FailureKind::SubOrchestrationFailed => "SubOrchestrationFailed",
        FailureKind::NonDeterminism => "NonDeterminism",
        FailureKind::NotRegistered => "NotRegistered",
        FailureKind::Serialization => "Serialization",
        FailureKind::Terminated => "Terminated",
        FailureKind::Internal => "Internal",
        FailureKind::EntityOperationFailed => "EntityOperationFailed",
        FailureKind::LockingRules => "LockingRules",
        FailureKind::LimitExceeded => "LimitExceeded",
        other => return Cow::Owned(format!("{other:?}")),
    })
}

/// A payload (JSON text inside the record) as JSON; text that is not JSON as a string.
fn payload(json: &Json) -> Value {
    serde_json::from_str(json.as_str()).unwrap_or_else(|_| Value::String(json.to_string()))
}

/// History events shaped as Durable Functions shows them. The turn markers
/// (`OrchestratorStarted`) are left out and give the `Timestamp` of the events after them;
/// a task's scheduling is folded into its completion or failure ([`Folding`]), leaving
/// only tasks still running as `TaskScheduled` or `SubOrchestrationInstanceCreated`.
pub(crate) fn history_bodies(history: &[HistoryEvent], show_output: bool) -> Vec<HistoryEventBody> {
    let mut turn = Timestamp::EPOCH;
    let mut folding = Folding::default();
    for event in history {
        match shown_as(event) {
            Shown::TurnStarted(at) => turn = at,
            Shown::Event(event_type) => {
                let draft = Draft::new(event_type, turn, show_output);
                folding.push(with_fields(draft, event));
            }
        }
    }
    folding.finish()
}

/// How a stored event appears in the HTTP history.
enum Shown {
    /// Not itself: a turn began at this time.
    TurnStarted(Timestamp),
    /// As an event of this `EventType`.
    Event(&'static str),
}

fn shown_as(event: &HistoryEvent) -> Shown {
    use HistoryEvent as E;
    match event {
        E::OrchestratorStarted { at } => Shown::TurnStarted(*at),
        E::ExecutionStarted { .. } => Shown::Event("ExecutionStarted"),
        E::TaskScheduled { .. } => Shown::Event("TaskScheduled"),
        E::TaskCompleted { .. } => Shown::Event("TaskCompleted"),
        E::TaskFailed { .. } => Shown::Event("TaskFailed"),
        E::TimerCreated { .. } => Shown::Event("TimerCreated"),
        E::TimerFired { .. } => Shown::Event("TimerFired"),
        E::SubOrchestrationCreated { .. } => Shown::Event("SubOrchestrationInstanceCreated"),
        E::SubOrchestrationCompleted { .. } => Shown::Event("SubOrchestrationInstanceCompleted"),
        E::SubOrchestrationFailed { .. } => Shown::Event("SubOrchestrationInstanceFailed"),
        E::EventRaised { .. } => Shown::Event("EventRaised"),
        E::ExecutionCompleted { .. } => Shown::Event("ExecutionCompleted"),
        E::ExecutionFailed { .. } => Shown::Event("ExecutionFailed"),
        E::ContinuedAsNew { .. } => Shown::Event("ContinuedAsNew"),
        E::ExecutionTerminated { .. } => Shown::Event("ExecutionTerminated"),
        E::TimerCancelled { .. } => Shown::Event("TimerCancelled"),
        E::ExecutionSuspended { .. } => Shown::Event("ExecutionSuspended"),
        E::ExecutionResumed { .. } => Shown::Event("ExecutionResumed"),
        E::EntityCalled { .. } => Shown::Event("EntityCalled"),
        E::EntitySignaled { .. } => Shown::Event("EntitySignaled"),
        E::EntityCompleted { .. } => Shown::Event("EntityCompleted"),
        E::EntityFailed { .. } => Shown::Event("EntityFailed"),
        E::LocksRequested { .. } => Shown::Event("LocksRequested"),
        E::LocksGranted { .. } => Shown::Event("LocksGranted"),
        E::LocksReleased { .. } => Shown::Event("LocksReleased"),
        E::TaskCancelled { .. } => Shown::Event("TaskCancelled"),
    }
}

/// The fields each kind of event shows, besides `EventType` and `Timestamp`: `name` is
/// `FunctionName` for what runs code (an orchestration, activity or sub-orchestration),
/// outputs are `Result`, and a completion names its task `TaskScheduledId`.
fn with_fields(draft: Draft, event: &HistoryEvent) -> Draft {
    use HistoryEvent as E;
    match event {
        E::ExecutionStarted {
            name,
            input,
            parent,
            generation: _,
        } => draft.function_name(name).input(input).parent(parent),
        E::TaskScheduled {
            id,
            name,
            input,
            retry: _,
        } => draft.schedules(id).function_name(name).input(input),
        E::SubOrchestrationCreated {
            id,
            name,
            instance,
            input,
        } => draft
            .schedules(id)
            .function_name(name)
            .instance(instance)
            .input(input),
        E::TaskCompleted { id, output } | E::SubOrchestrationCompleted { id, output } => {
            draft.completes(id).result(output)
        }
        E::TaskFailed { id, failure } | E::SubOrchestrationFailed { id, failure } => {
            draft.completes(id).failure(failure)
        }
        E::TimerCreated { id, fire_at } => draft.id(id).fire_at(*fire_at),
        E::TimerFired { id }
        | E::TimerCancelled { id }
        | E::LocksReleased { id }
        | E::TaskCancelled { id } => draft.id(id),
        E::EventRaised { name, input } => draft.name(name).input(input),
        E::ExecutionCompleted { output } => draft.result(output),
        E::ExecutionFailed { failure } => draft.failure(failure),
        E::ContinuedAsNew { input } => draft.input(input),
        E::ExecutionTerminated { reason }
        | E::ExecutionSuspended { reason }
        | E::ExecutionResumed { reason } => draft.reason(reason),
        E::EntityCalled {
            id,
            entity,
            operation,
            input,
        }
        | E::EntitySignaled {
            id,
            entity,
            operation,
            input,
        } => draft
            .id(id)
            .entity(entity)
            .operation(operation)
            .input(input),
        E::EntityCompleted { id, output } => draft.id(id).result(output),
        E::EntityFailed { id, failure } => draft.id(id).failure(failure),
        E::LocksRequested { id, entities } | E::LocksGranted { id, entities } => {
            draft.id(id).entities(entities)
        }
        // Never shown (see `shown_as`).
        E::OrchestratorStarted { .. } => draft,
    }
}

/// A history event's body in the making, and its part in [`Folding`].
struct Draft {
    body: HistoryEventBody,
    fold: Fold,
    show_output: bool,
}

/// An event's part in folding a task's scheduling into its completion.
enum Fold {
    Schedules(TaskId),
    Completes(TaskId),
    Neither,
}

impl Draft {
    fn new(event_type: &'static str, turn: Timestamp, show_output: bool) -> Draft {
        let body = HistoryEventBody {
            entities: None,
            entity: None,
            event_type,
            failure: None,
            fire_at: None,
            function_name: None,
            id: None,
            input: None,
            instance: None,
            name: None,
            operation: None,
            parent: ParentField::NotShown,
            reason: None,
            result: None,
            scheduled_time: None,
            task_scheduled_id: None,
            timestamp: format_time(turn.to_system_time()),
        };
        Draft {
            body,
            fold: Fold::Neither,
            show_output,
        }
    }

    /// `Id`, of a task whose completion this event is folded into.
    fn schedules(mut self, id: &TaskId) -> Draft {
        self.fold = Fold::Schedules(*id);
        self.id(id)
    }

    /// `TaskScheduledId`, of the task this event completes.
    fn completes(mut self, id: &TaskId) -> Draft {
        self.fold = Fold::Completes(*id);
        self.body.task_scheduled_id = Some(id.0);
        self
    }

    fn id(mut self, id: &TaskId) -> Draft {
        self.body.id = Some(id.0);
        self
    }

    fn function_name(mut self, name: &str) -> Draft {
        self.body.function_name = Some(name.to_owned());
        self
    }

    fn name(mut self, name: &str) -> Draft {
        self.body.name = Some(name.to_owned());
        self
    }

    fn input(mut self, input: &Json) -> Draft {
        self.body.input = self.show_output.then(|| payload(input));
        self
    }

    fn result(mut self, output: &Json) -> Draft {
        self.body.result = self.show_output.then(|| payload(output));
        self
    }

    fn failure(mut self, failure: &Failure) -> Draft {
        self.body.failure = Some(FailureBody::of(failure, 0));
        self
    }

    /// `FireAt`, in ISO 8601 as every other time.
    fn fire_at(mut self, fire_at: Timestamp) -> Draft {
        self.body.fire_at = Some(format_time(fire_at.to_system_time()));
        self
    }

    fn instance(mut self, instance: &InstanceId) -> Draft {
        self.body.instance = Some(instance.to_string());
        self
    }

    fn parent(mut self, parent: &Option<ParentRef>) -> Draft {
        self.body.parent = match parent {
            Some(parent) => ParentField::Parent(ParentBody {
                execution: parent.execution.0,
                instance: parent.instance.to_string(),
                task: parent.task.0,
            }),
            None => ParentField::NoParent,
        };
        self
    }

    fn entity(mut self, entity: &EntityId) -> Draft {
        self.body.entity = Some(HistoryEntityId::of(entity));
        self
    }

    fn entities(mut self, entities: &[EntityId]) -> Draft {
        self.body.entities = Some(entities.iter().map(HistoryEntityId::of).collect());
        self
    }

    fn operation(mut self, operation: &str) -> Draft {
        self.body.operation = Some(operation.to_owned());
        self
    }

    fn reason(mut self, reason: &str) -> Draft {
        self.body.reason = Some(reason.to_owned());
        self
    }
}

/// Folds each task's scheduling into its completion or failure, as Durable Functions
/// shows a task: the completion takes the `FunctionName` and, as `ScheduledTime`, the
/// `Timestamp` of the scheduling, which is left out.
#[derive(Default)]
struct Folding {
    /// The events so far; a scheduling already folded is `None`.
    bodies: Vec<Option<HistoryEventBody>>,
    /// Tasks scheduled and not completed yet: where their scheduling is in `bodies`.
    scheduled: BTreeMap<TaskId, usize>,
}

impl Folding {
    fn push(&mut self, draft: Draft) {
        let Draft { mut body, fold, .. } = draft;
        match fold {
            Fold::Schedules(id) => {
                self.scheduled.insert(id, self.bodies.len());
            }
            Fold::Completes(id) => {
                let scheduling = self
                    .scheduled
                    .remove(&id)
                    .and_then(|at| self.bodies.get_mut(at)?.take());
                if let Some(scheduling) = scheduling {
                    body.function_name = scheduling.function_name;
                    body.scheduled_time = Some(scheduling.timestamp);
                }
            }
            Fold::Neither => {}
        }
        self.bodies.push(Some(body));
    }

    fn finish(self) -> Vec<HistoryEventBody> {
        self.bodies.into_iter().flatten().collect()
    }
}

/// An entity in a list (`GET entities`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntityStatusBody<'a> {
    entity_id: EntityIdBody<'a>,
    last_operation_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a RawValue>,
}

/// An entity's id in an entity list.
#[derive(Serialize)]
struct EntityIdBody<'a> {
    name: &'a str,
    key: &'a str,
}

impl<'a> EntityStatusBody<'a> {
    /// `status`, with its state only with `fetch_state`.
    pub(crate) fn of(status: &'a EntityStatus, fetch_state: bool) -> EntityStatusBody<'a> {
        EntityStatusBody {
            entity_id: EntityIdBody {
                name: status.id.name(),
                key: status.id.key(),
            },
            last_operation_time: format_time(status.last_modified),
            state: if fetch_state {
                status.state.as_ref().and_then(raw)
            } else {
                None
            },
        }
    }
}

/// The payload of the check-status response: an instance's management URLs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CheckStatusBody {
    pub(crate) id: String,
    pub(crate) status_query_get_uri: String,
    pub(crate) send_event_post_uri: String,
    pub(crate) terminate_post_uri: String,
    pub(crate) purge_history_delete_uri: String,
    pub(crate) restart_post_uri: String,
    pub(crate) suspend_post_uri: String,
    pub(crate) resume_post_uri: String,
}

/// How many instances a purge deleted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PurgedBody {
    pub(crate) instances_deleted: u64,
}

/// An error answer, `application/problem+json` (RFC 9457), with the fields of the error
/// bodies of Durable Functions (ASP.NET's), which its client libraries read: the same
/// message as `Message` and `ExceptionMessage`.
#[derive(Serialize)]
pub(crate) struct ProblemBody<'a> {
    pub(crate) r#type: &'static str,
    pub(crate) title: &'a str,
    pub(crate) status: u16,
    pub(crate) detail: &'a str,
    #[serde(rename = "Message")]
    pub(crate) message: &'a str,
    #[serde(rename = "ExceptionMessage")]
    pub(crate) exception_message: &'a str,
}

/// The JSON this API answers with, pinned byte for byte: a change to a stored record must
/// never move the wire.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::CheckStatusResponse;
    use durable_types::ExecutionId;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-01-01T00:00:00Z, in milliseconds.
    const NEW_YEAR_MS: u64 = 1_767_225_600_000;

    fn history_wire(history: &[HistoryEvent], show_output: bool) -> String {
        serde_json::to_string(&history_bodies(history, show_output)).unwrap()
    }

    fn status_wire(
        status: &InstanceStatus,
        show_input: bool,
        history: Option<&[HistoryEvent]>,
    ) -> String {
        let history = history.map(|history| history_bodies(history, false));
        serde_json::to_string(&InstanceStatusBody::of(status, show_input, history)).unwrap()
    }

    fn entity_wire(status: &EntityStatus, fetch_state: bool) -> String {
        serde_json::to_string(&EntityStatusBody::of(status, fetch_state)).unwrap()
    }

    fn check_status_wire(response: &CheckStatusResponse) -> String {
        serde_json::to_string(&response.payload()).unwrap()
    }

    fn purged_wire(instances_deleted: u64) -> String {
        serde_json::to_string(&PurgedBody { instances_deleted }).unwrap()
    }

    fn json(text: &str) -> Json {
        Json::parse(text).unwrap()
    }

    fn id(text: &str) -> InstanceId {
        InstanceId::new(text).unwrap()
    }

    fn entity(name: &str, key: &str) -> EntityId {
        EntityId::new(name, key).unwrap()
    }

    fn turn(seconds: u64) -> HistoryEvent {
        HistoryEvent::OrchestratorStarted {
            at: Timestamp(NEW_YEAR_MS + seconds * 1000),
        }
    }

    fn failure(kind: FailureKind, message: &str) -> Failure {
        Failure::new(kind, message)
    }

    /// Every kind of event a stored history holds (in an order no execution would take),
    /// each task's completion after its scheduling, one task left running.
    fn every_kind() -> Vec<HistoryEvent> {
        use HistoryEvent as E;
        let locked = vec![entity("Lock", "a"), entity("Lock", "b")];
        vec![
            E::ExecutionStarted {
                name: "order".into(),
                input: json(r#"{"b": 1, "a": [1, 2]}"#),
                parent: Some(ParentRef {
                    instance: id("parent-1"),
                    execution: ExecutionId(3),
                    task: TaskId(4),
                }),
                generation: 1,
            },
            turn(0),
            E::TaskScheduled {
                id: TaskId(0),
                name: "charge".into(),
                input: json("42"),
                retry: None,
            },
            E::TimerCreated {
                id: TaskId(1),
                fire_at: Timestamp(NEW_YEAR_MS + 60_000),
            },
            E::SubOrchestrationCreated {
                id: TaskId(2),
                name: "ship".into(),
                instance: id("child-1"),
                input: json(r#""box""#),
            },
            E::TaskScheduled {
                id: TaskId(3),
                name: "notify".into(),
                input: json("null"),
                retry: None,
            },
            E::EntityCalled {
                id: TaskId(4),
                entity: entity("Counter", "k"),
                operation: "add".into(),
                input: json("1"),
            },
            E::EntitySignaled {
                id: TaskId(5),
                entity: entity("Counter", "k"),
                operation: "reset".into(),
                input: json("null"),
            },
            E::LocksRequested {
                id: TaskId(6),
                entities: locked.clone(),
            },
            E::SubOrchestrationCreated {
                id: TaskId(7),
                name: "pack".into(),
                instance: id("child-2"),
                input: json("[]"),
            },
            E::TaskScheduled {
                id: TaskId(8),
                name: "refund".into(),
                input: json("{}"),
                retry: None,
            },
            turn(1),
            E::TaskCompleted {
                id: TaskId(0),
                output: json(r#""ok""#),
            },
            E::TimerFired { id: TaskId(1) },
            E::SubOrchestrationFailed {
                id: TaskId(2),
                failure: Failure {
                    details: Some(json(r#"{"code": 7}"#)),
                    cause: Some(Box::new(failure(FailureKind::Application, "no stock"))),
                    ..failure(FailureKind::SubOrchestrationFailed, "ship failed")
                },
            },
            E::EntityCompleted {
                id: TaskId(4),
                output: json("2"),
            },
            E::LocksGranted {
                id: TaskId(6),
                entities: locked,
            },
            E::SubOrchestrationCompleted {
                id: TaskId(7),
                output: json("true"),
            },
            E::TaskFailed {
                id: TaskId(8),
                failure: failure(FailureKind::Panic, "refund panicked"),
            },
            E::EventRaised {
                name: "Approval".into(),
                input: json("true"),
            },
            turn(2),
            E::LocksReleased { id: TaskId(6) },
            E::EntityFailed {
                id: TaskId(9),
                failure: failure(FailureKind::EntityOperationFailed, "boom"),
            },
            E::TimerCreated {
                id: TaskId(10),
                fire_at: Timestamp(NEW_YEAR_MS + 3_600_000),
            },
            E::TimerCancelled { id: TaskId(10) },
            E::ExecutionSuspended {
                reason: "pause".into(),
            },
            E::ExecutionResumed {
                reason: "go".into(),
            },
            E::ContinuedAsNew { input: json("5") },
            E::ExecutionCompleted {
                output: json(r#"{"z": null, "y": "x"}"#),
            },
            E::ExecutionFailed {
                failure: failure(FailureKind::Application, "bad"),
            },
            E::ExecutionTerminated {
                reason: "stop".into(),
            },
        ]
    }

    /// A running execution: no turn yet, a payload that is not JSON (a damaged record shows
    /// as text), a sub-orchestration still running and a completion of an unknown task.
    fn running() -> Vec<HistoryEvent> {
        use HistoryEvent as E;
        vec![
            E::ExecutionStarted {
                name: "order".into(),
                input: serde_json::from_str::<Json>(r#""not json""#).unwrap(),
                parent: None,
                generation: 1,
            },
            E::SubOrchestrationCreated {
                id: TaskId(0),
                name: "ship".into(),
                instance: id("child-1"),
                input: json("7"),
            },
            E::TaskCompleted {
                id: TaskId(5),
                output: json("1"),
            },
        ]
    }

    fn status(runtime_status: RuntimeStatus) -> InstanceStatus {
        InstanceStatus {
            instance_id: id("order-1"),
            name: "order".into(),
            execution: ExecutionId(2),
            runtime_status,
            input: json(r#"{"n": 1}"#),
            output: None,
            failure: None,
            custom_status: None,
            created_at: UNIX_EPOCH + Duration::from_millis(NEW_YEAR_MS),
            last_updated_at: UNIX_EPOCH + Duration::from_millis(NEW_YEAR_MS + 61_500),
            parent: None,
            history: None,
        }
    }

    fn entity_status(state: Option<&str>) -> EntityStatus {
        EntityStatus {
            id: entity("Counter", "k"),
            state: state.map(json),
            locked_by: Some(id("order-1")),
            last_modified: UNIX_EPOCH + Duration::from_millis(NEW_YEAR_MS + 1_000),
        }
    }

    /// `[a,b,...]`: a JSON array of the events' texts.
    fn array(events: &[&str]) -> String {
        format!("[{}]", events.join(","))
    }

    #[test]
    fn history_events_with_output() {
        let expected = [
            r#"{"EventType":"ExecutionStarted","FunctionName":"order","Input":{"a":[1,2],"b":1},"Parent":{"execution":3,"instance":"parent-1","task":4},"Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TimerCreated","FireAt":"2026-01-01T00:01:00Z","Id":1,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskScheduled","FunctionName":"notify","Id":3,"Input":null,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entity":{"key":"k","name":"counter"},"EventType":"EntityCalled","Id":4,"Input":1,"Operation":"add","Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entity":{"key":"k","name":"counter"},"EventType":"EntitySignaled","Id":5,"Input":null,"Operation":"reset","Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entities":[{"key":"a","name":"lock"},{"key":"b","name":"lock"}],"EventType":"LocksRequested","Id":6,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskCompleted","FunctionName":"charge","Result":"ok","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":0,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"TimerFired","Id":1,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"SubOrchestrationInstanceFailed","Failure":{"cause":{"cause":null,"details":null,"kind":"Application","message":"no stock"},"details":"{\"code\": 7}","kind":"SubOrchestrationFailed","message":"ship failed"},"FunctionName":"ship","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":2,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"EntityCompleted","Id":4,"Result":2,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"Entities":[{"key":"a","name":"lock"},{"key":"b","name":"lock"}],"EventType":"LocksGranted","Id":6,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"SubOrchestrationInstanceCompleted","FunctionName":"pack","Result":true,"ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":7,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"TaskFailed","Failure":{"cause":null,"details":null,"kind":"Panic","message":"refund panicked"},"FunctionName":"refund","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":8,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"EventRaised","Input":true,"Name":"Approval","Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"LocksReleased","Id":6,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"EntityFailed","Failure":{"cause":null,"details":null,"kind":"EntityOperationFailed","message":"boom"},"Id":9,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"TimerCreated","FireAt":"2026-01-01T01:00:00Z","Id":10,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"TimerCancelled","Id":10,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionSuspended","Reason":"pause","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionResumed","Reason":"go","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ContinuedAsNew","Input":5,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionCompleted","Result":{"y":"x","z":null},"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionFailed","Failure":{"cause":null,"details":null,"kind":"Application","message":"bad"},"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionTerminated","Reason":"stop","Timestamp":"2026-01-01T00:00:02Z"}"#,
        ];
        assert_eq!(history_wire(&every_kind(), true), array(&expected));
    }

    #[test]
    fn history_events_without_output() {
        let expected = [
            r#"{"EventType":"ExecutionStarted","FunctionName":"order","Parent":{"execution":3,"instance":"parent-1","task":4},"Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TimerCreated","FireAt":"2026-01-01T00:01:00Z","Id":1,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskScheduled","FunctionName":"notify","Id":3,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entity":{"key":"k","name":"counter"},"EventType":"EntityCalled","Id":4,"Operation":"add","Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entity":{"key":"k","name":"counter"},"EventType":"EntitySignaled","Id":5,"Operation":"reset","Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entities":[{"key":"a","name":"lock"},{"key":"b","name":"lock"}],"EventType":"LocksRequested","Id":6,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskCompleted","FunctionName":"charge","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":0,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"TimerFired","Id":1,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"SubOrchestrationInstanceFailed","Failure":{"cause":{"cause":null,"details":null,"kind":"Application","message":"no stock"},"details":"{\"code\": 7}","kind":"SubOrchestrationFailed","message":"ship failed"},"FunctionName":"ship","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":2,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"EntityCompleted","Id":4,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"Entities":[{"key":"a","name":"lock"},{"key":"b","name":"lock"}],"EventType":"LocksGranted","Id":6,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"SubOrchestrationInstanceCompleted","FunctionName":"pack","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":7,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"TaskFailed","Failure":{"cause":null,"details":null,"kind":"Panic","message":"refund panicked"},"FunctionName":"refund","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":8,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"EventRaised","Name":"Approval","Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"LocksReleased","Id":6,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"EntityFailed","Failure":{"cause":null,"details":null,"kind":"EntityOperationFailed","message":"boom"},"Id":9,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"TimerCreated","FireAt":"2026-01-01T01:00:00Z","Id":10,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"TimerCancelled","Id":10,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionSuspended","Reason":"pause","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionResumed","Reason":"go","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ContinuedAsNew","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionCompleted","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionFailed","Failure":{"cause":null,"details":null,"kind":"Application","message":"bad"},"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionTerminated","Reason":"stop","Timestamp":"2026-01-01T00:00:02Z"}"#,
        ];
        assert_eq!(history_wire(&every_kind(), false), array(&expected));
    }

    #[test]
    fn history_of_a_running_execution() {
        let with_output = [
            r#"{"EventType":"ExecutionStarted","FunctionName":"order","Input":"not json","Parent":null,"Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"SubOrchestrationInstanceCreated","FunctionName":"ship","Id":0,"Input":7,"Instance":"child-1","Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskCompleted","Result":1,"TaskScheduledId":5,"Timestamp":"1970-01-01T00:00:00Z"}"#,
        ];
        assert_eq!(history_wire(&running(), true), array(&with_output));
        let without_output = [
            r#"{"EventType":"ExecutionStarted","FunctionName":"order","Parent":null,"Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"SubOrchestrationInstanceCreated","FunctionName":"ship","Id":0,"Instance":"child-1","Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskCompleted","TaskScheduledId":5,"Timestamp":"1970-01-01T00:00:00Z"}"#,
        ];
        assert_eq!(history_wire(&running(), false), array(&without_output));
    }

    /// An entity's inbox messages never reach a stored history; were one there, it would
    /// not be shown.
    #[test]
    fn status_shows_the_output_of_a_completed_instance() {
        let completed = InstanceStatus {
            output: Some(json("[1, 2]")),
            custom_status: Some(json(r#" "done" "#)),
            failure: Some(failure(FailureKind::Application, "ignored")),
            ..status(RuntimeStatus::Completed)
        };
        assert_eq!(
            status_wire(&completed, true, None),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Completed","input":{"n": 1},"customStatus":"done","output":[1, 2],"createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z"}"#
        );
    }

    #[test]
    fn status_shows_the_failure_or_the_reason_as_output() {
        let cause = failure(FailureKind::Application, "card declined");
        let failed = InstanceStatus {
            failure: Some(Failure {
                cause: Some(Box::new(cause)),
                ..failure(FailureKind::ActivityFailed, "activity `charge` failed")
            }),
            ..status(RuntimeStatus::Failed)
        };
        assert_eq!(
            status_wire(&failed, true, None),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Failed","input":{"n": 1},"customStatus":null,"output":"activity `charge` failed: card declined","createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z"}"#
        );
        let terminated = InstanceStatus {
            failure: Some(Failure {
                cause: Some(Box::new(failure(FailureKind::Application, "hidden"))),
                ..failure(FailureKind::Terminated, "stop \"now\"")
            }),
            ..status(RuntimeStatus::Terminated)
        };
        assert_eq!(
            status_wire(&terminated, true, None),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Terminated","input":{"n": 1},"customStatus":null,"output":"stop \"now\"","createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z"}"#
        );
    }

    #[test]
    fn status_with_history_and_without_input() {
        assert_eq!(
            status_wire(&status(RuntimeStatus::Running), false, Some(&running())),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Running","input":null,"customStatus":null,"output":null,"createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z","historyEvents":[{"EventType":"ExecutionStarted","FunctionName":"order","Parent":null,"Timestamp":"1970-01-01T00:00:00Z"},{"EventType":"SubOrchestrationInstanceCreated","FunctionName":"ship","Id":0,"Instance":"child-1","Timestamp":"1970-01-01T00:00:00Z"},{"EventType":"TaskCompleted","TaskScheduledId":5,"Timestamp":"1970-01-01T00:00:00Z"}]}"#
        );
        assert_eq!(
            status_wire(&status(RuntimeStatus::Pending), true, Some(&[])),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Pending","input":{"n": 1},"customStatus":null,"output":null,"createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z","historyEvents":[]}"#
        );
        assert_eq!(
            status_wire(&status(RuntimeStatus::Suspended), true, None),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Suspended","input":{"n": 1},"customStatus":null,"output":null,"createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z"}"#
        );
    }

    #[test]
    fn entity_bodies_with_and_without_state() {
        let stateful = entity_status(Some(r#"{"value": 3}"#));
        assert_eq!(
            entity_wire(&stateful, true),
            r#"{"entityId":{"name":"counter","key":"k"},"lastOperationTime":"2026-01-01T00:00:01Z","state":{"value": 3}}"#
        );
        assert_eq!(
            entity_wire(&stateful, false),
            r#"{"entityId":{"name":"counter","key":"k"},"lastOperationTime":"2026-01-01T00:00:01Z"}"#
        );
        assert_eq!(
            entity_wire(&entity_status(None), true),
            r#"{"entityId":{"name":"counter","key":"k"},"lastOperationTime":"2026-01-01T00:00:01Z"}"#
        );
    }

    #[test]
    fn check_status_payloads_with_and_without_code() {
        let base = "http://h:1/runtime/webhooks/durabletask";
        let plain = CheckStatusResponse::new(id("a:b"), base.to_owned(), None);
        assert_eq!(
            check_status_wire(&plain),
            r#"{"id":"a:b","statusQueryGetUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab","sendEventPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/raiseEvent/{eventName}","terminatePostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/terminate?reason={text}","purgeHistoryDeleteUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab","restartPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/restart","suspendPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/suspend?reason={text}","resumePostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/resume?reason={text}"}"#
        );
        let with_code = CheckStatusResponse::new(id("a:b"), base.to_owned(), Some("k y&z".into()));
        assert_eq!(
            check_status_wire(&with_code),
            r#"{"id":"a:b","statusQueryGetUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab?code=k%20y%26z","sendEventPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/raiseEvent/{eventName}?code=k%20y%26z","terminatePostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/terminate?reason={text}&code=k%20y%26z","purgeHistoryDeleteUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab?code=k%20y%26z","restartPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/restart?code=k%20y%26z","suspendPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/suspend?reason={text}&code=k%20y%26z","resumePostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/resume?reason={text}&code=k%20y%26z"}"#
        );
    }

    #[test]
    fn purge_counts() {
        assert_eq!(purged_wire(3), r#"{"instancesDeleted":3}"#);
    }
}
