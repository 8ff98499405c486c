//! The state one execution shares between the [`Engine`](super::Engine) and the
//! orchestrator's [`OrchestrationContext`](crate::OrchestrationContext): the durable tasks
//! created so far and their outcomes, the actions the code produced and not yet matched or
//! emitted, and the replay-safe clock.

use crate::turn::Action;
use durable_types::{EntityId, ExecutionId, Failure, InstanceId, Json, TaskId, Timestamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::task::Waker;

/// What a durable task is: used for matching history and for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TaskKind {
    Activity {
        name: String,
    },
    Timer {
        fire_at: Timestamp,
    },
    SubOrchestration {
        name: String,
        instance: InstanceId,
    },
    /// A wait for the next external event of this name. Not an action: nothing is
    /// scheduled, and history records only the events that arrive.
    Event {
        name: String,
    },
    /// A call of an entity operation.
    EntityCall {
        entity: EntityId,
        operation: String,
    },
    /// A signal to an entity: done once sent (it takes a task id to be matched on replay).
    Signal,
    /// A request for the locks of these entities.
    Lock {
        entities: Vec<EntityId>,
    },
}

impl TaskKind {
    pub(crate) fn describe(&self) -> String {
        match self {
            TaskKind::Activity { name } => format!("activity `{name}`"),
            TaskKind::Timer { .. } => "timer".to_owned(),
            TaskKind::SubOrchestration { name, instance } => {
                format!("sub-orchestration `{name}` (instance `{instance}`)")
            }
            TaskKind::Event { name } => format!("external event `{name}`"),
            TaskKind::EntityCall { entity, operation } => {
                format!("operation `{operation}` of entity `{entity}`")
            }
            TaskKind::Signal => "signal".to_owned(),
            TaskKind::Lock { entities } => format!("lock of {} entities", entities.len()),
        }
    }
}

/// One durable task of the execution.
#[derive(Debug)]
pub(crate) struct TaskState {
    pub(crate) kind: TaskKind,
    /// The outcome, once its completion event has been applied; taken by the future.
    pub(crate) outcome: Option<Result<Json, Failure>>,
    /// Whether a completion has been applied (stays true after the outcome is taken).
    pub(crate) completed: bool,
    /// Position of the completion among all completions of the execution (history order).
    pub(crate) completion_order: u64,
    /// The waker of the future awaiting this task.
    pub(crate) waker: Option<Waker>,
    /// The orchestrator dropped the task before it completed (a timer that lost a
    /// `select`); a late completion is discarded.
    pub(crate) cancelled: bool,
}

/// Execution state shared by the engine and the context.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) instance: InstanceId,
    pub(crate) execution: ExecutionId,
    /// 1 for the first execution of a start, one more after each `continue_as_new`; from
    /// the `ExecutionStarted` event.
    pub(crate) generation: u32,
    /// The registered name of the orchestrator running; from the `ExecutionStarted` event.
    pub(crate) orchestrator: String,
    /// The time of the current turn, from its `OrchestratorStarted` event.
    pub(crate) now: Timestamp,
    pub(crate) replaying: bool,
    /// Tasks indexed by their `TaskId`.
    pub(crate) tasks: Vec<TaskState>,
    /// Actions the code produced since the engine last took them.
    pub(crate) produced: VecDeque<Action>,
    pub(crate) completions: u64,
    pub(crate) guids: u64,
    /// Set by `continue_as_new`: the input of the next execution, or why there is none
    /// (the execution then fails).
    pub(crate) continue_as_new: Option<Result<Json, Failure>>,
    /// External events that arrived with nobody waiting, by name, oldest first.
    pub(crate) events: BTreeMap<String, VecDeque<Json>>,
    /// Event waits not yet satisfied, by name, oldest first.
    pub(crate) event_waiters: BTreeMap<String, VecDeque<TaskId>>,
    /// The execution has ended: dropped tasks no longer produce actions.
    pub(crate) ended: bool,
    /// Above 0 while a race drops its losers: an activity dropped then is cancelled. (An
    /// activity task dropped anywhere else was fire-and-forget, and runs on.)
    pub(crate) cancelling: u32,
    /// Lock tasks whose locks were released.
    pub(crate) released_locks: BTreeSet<TaskId>,
    pub(crate) custom_status: Option<Json>,
}

impl State {
    pub(crate) fn new(instance: InstanceId, execution: ExecutionId) -> State {
        State {
            instance,
            execution,
            generation: 1,
            orchestrator: String::new(),
            now: Timestamp::EPOCH,
            replaying: false,
            tasks: Vec::new(),
            produced: VecDeque::new(),
            completions: 0,
            guids: 0,
            continue_as_new: None,
            events: BTreeMap::new(),
            event_waiters: BTreeMap::new(),
            ended: false,
            cancelling: 0,
            released_locks: BTreeSet::new(),
            custom_status: None,
        }
    }

    /// Creates a task and records the action that schedules it.
    pub(crate) fn schedule(
        &mut self,
        kind: TaskKind,
        action: impl FnOnce(TaskId) -> Action,
    ) -> TaskId {
        let id = self.new_task(kind);
        self.produced.push_back(action(id));
        id
    }

    fn new_task(&mut self, kind: TaskKind) -> TaskId {
        let id = TaskId(self.tasks.len() as u64);
        self.tasks.push(TaskState {
            kind,
            outcome: None,
            completed: false,
            completion_order: 0,
            waker: None,
            cancelled: false,
        });
        id
    }

    /// Records a signal: a task that is complete as soon as it is sent.
    pub(crate) fn signal(&mut self, action: impl FnOnce(TaskId) -> Action) -> TaskId {
        let id = self.schedule(TaskKind::Signal, action);
        if let Some(task) = self.task_mut(id) {
            task.completed = true;
        }
        id
    }

    /// Releases the locks of lock task `id` (once), recording the action.
    pub(crate) fn release_locks(&mut self, id: TaskId) {
        if self.ended || !self.released_locks.insert(id) {
            return;
        }
        if let Some(TaskState {
            kind: TaskKind::Lock { entities },
            ..
        }) = self.task(id)
        {
            let entities = entities.clone();
            self.produced
                .push_back(Action::ReleaseLocks { id, entities });
        }
    }

    /// The critical section the code is in: whether a lock is requested or held, and the
    /// entities held. Derived from history alone, so replay sees the same.
    pub(crate) fn critical_section(&self) -> (bool, BTreeSet<EntityId>) {
        let mut in_force = false;
        let mut held = BTreeSet::new();
        for (index, task) in self.tasks.iter().enumerate() {
            let TaskKind::Lock { entities } = &task.kind else {
                continue;
            };
            if task.cancelled || self.released_locks.contains(&TaskId(index as u64)) {
                continue;
            }
            in_force = true;
            if task.completed {
                held.extend(entities.iter().cloned());
            }
        }
        (in_force, held)
    }

    /// A grant for a lock request the code dropped before it came: marks it granted and
    /// releases it at once. Returns whether `id` was such a request.
    pub(crate) fn grant_abandoned_lock(&mut self, id: TaskId) -> bool {
        let Some(task) = self.task_mut(id) else {
            return false;
        };
        if !matches!(task.kind, TaskKind::Lock { .. }) || !task.cancelled || task.completed {
            return false;
        }
        task.completed = true;
        self.release_locks(id);
        true
    }

    /// Lock requests not released, granted or not: what the end of the execution must
    /// release. (A release reaching an entity the request has not locked is ignored; a
    /// grant that comes after the end is released by the runtime.)
    pub(crate) fn unreleased_locks(&self) -> Vec<(TaskId, Vec<EntityId>)> {
        self.tasks
            .iter()
            .enumerate()
            .filter_map(|(index, task)| match &task.kind {
                TaskKind::Lock { entities } => {
                    let id = TaskId(index as u64);
                    (!self.released_locks.contains(&id)).then(|| (id, entities.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Creates a wait for the next external event `name`: satisfied at once by the oldest
    /// stored event of that name, or by the next to arrive.
    pub(crate) fn wait_for_event(&mut self, name: &str) -> TaskId {
        let id = self.new_task(TaskKind::Event {
            name: name.to_owned(),
        });
        let stored = self.events.get_mut(name).and_then(VecDeque::pop_front);
        match stored {
            Some(payload) => {
                // Completing a fresh task cannot fail and has no waker yet.
                let _ = self.complete(id, |_| true, Ok(payload));
            }
            None => self
                .event_waiters
                .entry(name.to_owned())
                .or_default()
                .push_back(id),
        }
        id
    }

    /// Delivers an external event to the oldest wait for it, or stores it. Returns the
    /// waker to wake.
    pub(crate) fn raise_event(&mut self, name: &str, payload: Json) -> Option<Waker> {
        let waiter = self
            .event_waiters
            .get_mut(name)
            .and_then(VecDeque::pop_front);
        match waiter {
            Some(id) => self.complete(id, |_| true, Ok(payload)).ok().flatten(),
            None => {
                self.events
                    .entry(name.to_owned())
                    .or_default()
                    .push_back(payload);
                None
            }
        }
    }

    /// The orchestrator dropped task `id`. A pending timer is cancelled, and so is a
    /// pending activity that lost a race (the activity is told to stop); an event wait
    /// stops waiting, and an event it received but nobody read goes back to be delivered
    /// to the next wait — events are never lost.
    pub(crate) fn abandon(&mut self, id: TaskId) {
        let ended = self.ended;
        let race_lost = self.cancelling > 0;
        let Some(task) = self.task_mut(id) else {
            return;
        };
        match task.kind.clone() {
            TaskKind::Timer { fire_at } if !task.completed && !task.cancelled && !ended => {
                task.cancelled = true;
                self.produced.push_back(Action::CancelTimer { id, fire_at });
            }
            TaskKind::Activity { .. }
                if race_lost && !task.completed && !task.cancelled && !ended =>
            {
                task.cancelled = true;
                self.produced.push_back(Action::CancelActivity { id });
            }
            // A lock request dropped before its grant: the grant is released when it comes
            // (`grant_abandoned_lock`). A grant that never became a guard: released now.
            TaskKind::Lock { .. } if !ended => {
                if !task.completed {
                    task.cancelled = true;
                } else if task.outcome.is_some() {
                    self.release_locks(id);
                }
            }
            TaskKind::Event { name } => {
                if !task.completed {
                    if let Some(waiters) = self.event_waiters.get_mut(&name) {
                        waiters.retain(|waiter| *waiter != id);
                    }
                } else if let Some(Ok(payload)) = task.outcome.take() {
                    self.events.entry(name).or_default().push_front(payload);
                }
            }
            _ => {}
        }
    }

    /// Replaces the due time of timer `id` with the one history recorded.
    pub(crate) fn record_fire_at(&mut self, id: TaskId, recorded: Timestamp) {
        if let Some(TaskState {
            kind: TaskKind::Timer { fire_at },
            ..
        }) = self.task_mut(id)
        {
            *fire_at = recorded;
        }
        for action in &mut self.produced {
            if let Action::CancelTimer {
                id: cancelled,
                fire_at,
            } = action
                && *cancelled == id
            {
                *fire_at = recorded;
            }
        }
    }

    /// External events stored and not yet read, oldest first within each name.
    pub(crate) fn take_stored_events(&mut self) -> Vec<(String, Json)> {
        std::mem::take(&mut self.events)
            .into_iter()
            .flat_map(|(name, payloads)| {
                payloads
                    .into_iter()
                    .map(move |payload| (name.clone(), payload))
            })
            .collect()
    }

    pub(crate) fn task(&self, id: TaskId) -> Option<&TaskState> {
        usize::try_from(id.0)
            .ok()
            .and_then(|index| self.tasks.get(index))
    }

    pub(crate) fn task_mut(&mut self, id: TaskId) -> Option<&mut TaskState> {
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
        let Some(task) = self.task_mut(id) else {
            return Err("no such task");
        };
        if !expected(&task.kind) {
            return Err("the task is of another kind");
        }
        if task.completed {
            return Err("the task already completed");
        }
        if task.cancelled {
            return Err("the orchestrator cancelled the task");
        }
        task.completed = true;
        task.outcome = Some(outcome);
        task.completion_order = order;
        let waker = task.waker.take();
        self.completions += 1;
        Ok(waker)
    }

    /// The ids of tasks scheduled and not completed, with their kinds.
    pub(crate) fn outstanding(&self) -> impl Iterator<Item = (TaskId, &TaskKind)> {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, task)| !task.completed && !task.cancelled)
            .map(|(index, task)| (TaskId(index as u64), &task.kind))
    }
}
