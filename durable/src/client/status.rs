//! What a client reads: [`InstanceStatus`], [`EntityStatus`], and the pages of lists.

use durable_types::{
    EntityId, EntityRecord, ExecutionId, Failure, HistoryEvent, InstanceId, InstanceRecord, Json,
    RuntimeStatus,
};
use serde::de::DeserializeOwned;
use std::time::SystemTime;

/// The state of an instance, as [`Client::status`](super::Client::status) reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InstanceStatus {
    /// The instance id.
    pub instance_id: InstanceId,
    /// Registered name of the orchestrator.
    pub name: String,
    /// The current execution.
    pub execution: ExecutionId,
    /// Lifecycle state.
    pub runtime_status: RuntimeStatus,
    /// The input of the current execution.
    pub input: Json,
    /// The output, once completed.
    pub output: Option<Json>,
    /// The failure, once failed or terminated.
    pub failure: Option<Failure>,
    /// The custom status the orchestrator set last.
    pub custom_status: Option<Json>,
    /// When the instance was created.
    pub created_at: SystemTime,
    /// When its state last changed.
    pub last_updated_at: SystemTime,
    /// The parent instance, for a sub-orchestration.
    pub parent: Option<InstanceId>,
    /// The history of the current execution, when asked for.
    pub history: Option<Vec<HistoryEvent>>,
}

impl InstanceStatus {
    pub(crate) fn from_record(record: InstanceRecord) -> InstanceStatus {
        InstanceStatus {
            instance_id: record.id,
            name: record.name,
            execution: record.execution,
            runtime_status: record.status,
            input: record.input,
            output: record.output,
            failure: record.failure,
            custom_status: record.custom_status,
            created_at: record.created_at.to_system_time(),
            last_updated_at: record.last_updated_at.to_system_time(),
            parent: record.parent.map(|parent| parent.instance),
            history: None,
        }
    }

    /// Decodes the output as `T` (`None` until the instance completed).
    ///
    /// # Errors
    /// When the output does not decode as `T`.
    pub fn output_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.output.as_ref().map(Json::decode).transpose()
    }

    /// Decodes the custom status as `T`.
    ///
    /// # Errors
    /// When the custom status does not decode as `T`.
    pub fn custom_status_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.custom_status.as_ref().map(Json::decode).transpose()
    }

    /// Whether the instance has ended.
    pub fn is_ended(&self) -> bool {
        self.runtime_status.is_terminal()
    }
}

/// An entity, as [`Client::list_entities`](super::Client::list_entities) reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EntityStatus {
    /// The entity.
    pub id: EntityId,
    /// Its state as JSON (`None`: no state).
    pub state: Option<Json>,
    /// The orchestration that holds its lock, if any.
    pub locked_by: Option<InstanceId>,
    /// When it last changed.
    pub last_modified: SystemTime,
}

impl EntityStatus {
    pub(crate) fn from_record(record: EntityRecord) -> EntityStatus {
        EntityStatus {
            id: record.id,
            state: record.state,
            locked_by: record.lock.map(|lock| lock.instance),
            last_modified: record.last_modified.to_system_time(),
        }
    }
}

/// One page of [`Client::list_entities`](super::Client::list_entities).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EntityPage {
    /// The entities, in id order.
    pub entities: Vec<EntityStatus>,
    /// Pass this to [`Client::list_entities`](super::Client::list_entities) for the next page; `None` on the last page.
    pub continuation: Option<String>,
}

/// One page of [`Client::list`](super::Client::list).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InstancePage {
    /// The instances, in id order.
    pub instances: Vec<InstanceStatus>,
    /// Pass this to [`Client::list`](super::Client::list) for the next page; `None` on the last page.
    pub continuation: Option<String>,
}
