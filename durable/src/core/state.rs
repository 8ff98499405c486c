//! The state one execution shares between the [`Engine`](super::Engine) and the
//! orchestrator's [`OrchestrationContext`](crate::OrchestrationContext): the durable tasks
//! created so far and their outcomes, the actions the code produced and not yet matched or
//! emitted, and the replay-safe clock.

use super::action::Action;
use durable_store::{ExecutionId, Failure, InstanceId, Json, TaskId, Timestamp};
use std::collections::VecDeque;
use std::task::Waker;

/// What a durable task is: used for matching history and for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TaskKind {
    Activity { name: String },
    Timer { fire_at: Timestamp },
    SubOrchestration { name: String, instance: InstanceId },
}

impl TaskKind {
    pub(crate) fn describe(&self) -> String {
        match self {
            TaskKind::Activity { name } => format!("activity `{name}`"),
            TaskKind::Timer { .. } => "timer".to_owned(),
            TaskKind::SubOrchestration { name, instance } => {
                format!("sub-orchestration `{name}` (instance `{instance}`)")
            }
        }
    }
}

/// One durable task of the execution.
#[derive(Debug)]
pub(crate) struct TaskSlot {
    pub(crate) kind: TaskKind,
    /// The outcome, once its completion event has been applied; taken by the future.
    pub(crate) outcome: Option<Result<Json, Failure>>,
    /// Whether a completion has been applied (stays true after the outcome is taken).
    pub(crate) completed: bool,
    /// Position of the completion among all completions of the execution (history order).
    pub(crate) completion_order: u64,
    /// The waker of the future awaiting this task.
    pub(crate) waker: Option<Waker>,
}

/// Execution state shared by the engine and the context.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) instance: InstanceId,
    pub(crate) execution: ExecutionId,
    /// The time of the current turn, from its `OrchestratorStarted` event.
    pub(crate) now: Timestamp,
    pub(crate) replaying: bool,
    /// Tasks indexed by their `TaskId`.
    pub(crate) tasks: Vec<TaskSlot>,
    /// Actions the code produced since the engine last took them.
    pub(crate) produced: VecDeque<Action>,
    pub(crate) completions: u64,
    pub(crate) guids: u64,
    /// Set by `continue_as_new`: the input of the next execution.
    pub(crate) continue_as_new: Option<Json>,
    pub(crate) custom_status: Option<Json>,
}

impl State {
    pub(crate) fn new(instance: InstanceId, execution: ExecutionId) -> State {
        State {
            instance,
            execution,
            now: Timestamp::EPOCH,
            replaying: false,
            tasks: Vec::new(),
            produced: VecDeque::new(),
            completions: 0,
            guids: 0,
            continue_as_new: None,
            custom_status: None,
        }
    }

    /// Creates a task and records the action that schedules it.
    pub(crate) fn schedule(
        &mut self,
        kind: TaskKind,
        action: impl FnOnce(TaskId) -> Action,
    ) -> TaskId {
        let id = TaskId(self.tasks.len() as u64);
        self.tasks.push(TaskSlot {
            kind,
            outcome: None,
            completed: false,
            completion_order: 0,
            waker: None,
        });
        self.produced.push_back(action(id));
        id
    }

    pub(crate) fn slot(&self, id: TaskId) -> Option<&TaskSlot> {
        usize::try_from(id.0)
            .ok()
            .and_then(|index| self.tasks.get(index))
    }

    pub(crate) fn slot_mut(&mut self, id: TaskId) -> Option<&mut TaskSlot> {
        usize::try_from(id.0)
            .ok()
            .and_then(|index| self.tasks.get_mut(index))
    }

    /// Records the outcome of task `id`; returns the waker to wake, or why the completion
    /// does not apply (unknown task, already completed, wrong kind).
    pub(crate) fn complete(
        &mut self,
        id: TaskId,
        expected: fn(&TaskKind) -> bool,
        outcome: Result<Json, Failure>,
    ) -> Result<Option<Waker>, &'static str> {
        let order = self.completions;
        let Some(slot) = self.slot_mut(id) else {
            return Err("no such task");
        };
        if !expected(&slot.kind) {
            return Err("the task is of another kind");
        }
        if slot.completed {
            return Err("the task already completed");
        }
        slot.completed = true;
        slot.outcome = Some(outcome);
        slot.completion_order = order;
        let waker = slot.waker.take();
        self.completions += 1;
        Ok(waker)
    }

    /// The ids of tasks scheduled and not completed, with their kinds.
    pub(crate) fn outstanding(&self) -> impl Iterator<Item = (TaskId, &TaskKind)> {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.completed)
            .map(|(index, slot)| (TaskId(index as u64), &slot.kind))
    }
}
