//! [`ActivityContext`]: what an activity knows about the task it runs for.

use durable_types::{ExecutionId, InstanceId, TaskId};

/// The context of one activity execution.
///
/// Activities run at least once: after a crash, an activity whose result was not yet
/// committed runs again. [`ActivityContext::idempotency_key`] is the same for every run of
/// one task, so an activity can make its side effects idempotent with it.
#[derive(Clone, Debug)]
pub struct ActivityContext {
    instance: InstanceId,
    execution: ExecutionId,
    task: TaskId,
    name: String,
}

impl ActivityContext {
    /// The context of task `task` of an execution (public so activities can be unit-tested
    /// by calling them directly).
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
        }
    }

    /// The orchestration instance that scheduled this activity.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance
    }

    /// The execution of that instance.
    pub fn execution_id(&self) -> ExecutionId {
        self.execution
    }

    /// The task's sequence number within the execution.
    pub fn task_id(&self) -> TaskId {
        self.task
    }

    /// The activity's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A key that is the same for every run of this task and different for every other
    /// task: `"{instance}:{execution}:{task}"`.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}:{}", self.instance, self.execution, self.task)
    }
}
