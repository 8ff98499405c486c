//! [`Engine`]: drives one execution of an orchestrator. It turns (history so far, new
//! events) into (events to append, actions to perform, outcome), polling the orchestrator's
//! future in between. It does no I/O and reads no clock: the time of a turn is an input.
//!
//! Replay and live turns share one rule, which is what makes replay reproduce the live run:
//! events are applied one at a time, in history order, and the orchestrator is polled after
//! each event that woke it. During replay, each action the code produces must be matched by
//! the history event that recorded it; any mismatch is nondeterminism and fails the
//! execution instead of silently diverging.

use super::action::{Action, Outcome, describe_recorded};
use super::state::{State, TaskKind};
use crate::context::OrchestrationContext;
use crate::error::Error;
use crate::function::{LocalBoxFuture, OrchestratorFn};
use durable_store::{
    EntityId, ExecutionId, Failure, FailureKind, HistoryEvent, InstanceId, Json, TaskId, Timestamp,
};
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Replay,
    Live,
}

/// A task of the execution that has not completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outstanding {
    /// An activity.
    Activity(TaskId),
    /// A timer, with its due time.
    Timer(TaskId, Timestamp),
    /// A sub-orchestration.
    SubOrchestration(TaskId),
    /// Entity locks held.
    Locks(TaskId, Vec<EntityId>),
}

/// The tasks a history leaves outstanding, read from the events alone (no code runs):
/// for ending an execution whose code cannot be replayed.
pub fn outstanding_in(history: &[HistoryEvent]) -> Vec<Outstanding> {
    let mut open: std::collections::BTreeMap<TaskId, Outstanding> =
        std::collections::BTreeMap::new();
    for event in history {
        match event {
            HistoryEvent::LocksRequested { id, entities }
            | HistoryEvent::LocksGranted { id, entities } => {
                open.insert(*id, Outstanding::Locks(*id, entities.clone()));
            }
            HistoryEvent::LocksReleased { id } => {
                open.remove(id);
            }
            HistoryEvent::TaskScheduled { id, .. } => {
                open.insert(*id, Outstanding::Activity(*id));
            }
            HistoryEvent::TimerCreated { id, fire_at } => {
                open.insert(*id, Outstanding::Timer(*id, *fire_at));
            }
            HistoryEvent::SubOrchestrationCreated { id, .. } => {
                open.insert(*id, Outstanding::SubOrchestration(*id));
            }
            HistoryEvent::TaskCompleted { id, .. }
            | HistoryEvent::TaskFailed { id, .. }
            | HistoryEvent::TimerFired { id }
            | HistoryEvent::TimerCancelled { id }
            | HistoryEvent::SubOrchestrationCompleted { id, .. }
            | HistoryEvent::SubOrchestrationFailed { id, .. } => {
                open.remove(id);
            }
            _ => {}
        }
    }
    open.into_values().collect()
}

/// Sets a flag when the orchestrator's future is woken.
#[derive(Default)]
struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One execution of an orchestrator, kept in memory between turns.
pub struct Engine {
    state: Rc<RefCell<State>>,
    orchestrator: OrchestratorFn,
    future: Option<LocalBoxFuture<'static, Result<Json, Error>>>,
    wake_flag: Arc<WakeFlag>,
    waker: Waker,
    outcome: Option<Outcome>,
    /// History events replayed so far, to say where replay diverged.
    replayed: u64,
}

impl Engine {
    /// An engine for execution `execution` of `instance`, before any event.
    pub fn new(
        instance: InstanceId,
        execution: ExecutionId,
        orchestrator: OrchestratorFn,
    ) -> Engine {
        let wake_flag = Arc::new(WakeFlag::default());
        Engine {
            state: Rc::new(RefCell::new(State::new(instance, execution))),
            orchestrator,
            future: None,
            waker: Waker::from(Arc::clone(&wake_flag)),
            wake_flag,
            outcome: None,
            replayed: 0,
        }
    }

    /// Replays the committed history of the execution, bringing the orchestrator back to
    /// where it stopped.
    ///
    /// # Errors
    /// A nondeterminism failure when the code does not reproduce the history, or the
    /// execution's failure if the code panicked during replay.
    pub fn replay(&mut self, history: &[HistoryEvent]) -> Result<(), Failure> {
        self.state.borrow_mut().replaying = true;
        let mut sink = Turn::default();
        for event in history {
            self.apply(event.clone(), Mode::Replay, &mut sink)?;
        }
        self.state.borrow_mut().replaying = false;
        if let Some(action) = self.state.borrow().produced.front() {
            return Err(self.nondeterminism(format!(
                "the code scheduled {} after the last recorded event, which history does not record",
                action.describe()
            )));
        }
        let history_ended = history.last().is_some_and(is_terminal);
        match &self.outcome {
            _ if history_ended => Ok(()),
            None if self.future.is_none() && !history.is_empty() => Err(self.nondeterminism(
                "history has no ExecutionStarted event, so the orchestrator never started"
                    .to_owned(),
            )),
            None => Ok(()),
            // A panic during replay is reported as itself: it may not be nondeterminism at
            // all (a bug reached only on this path, an environment-dependent panic).
            Some(Outcome::Failed(failure)) if failure.kind == FailureKind::Panic => {
                Err(failure.clone())
            }
            Some(_) => Err(self.nondeterminism(
                "the code ended during replay, but history shows the execution still running"
                    .to_owned(),
            )),
        }
    }

    /// Runs one live turn at time `now`, consuming `inputs` (new messages: the start of the
    /// execution, task completions, external events, a terminate request) in order.
    ///
    /// A terminate request takes precedence: the execution ends without running its code
    /// again, whatever else arrived.
    pub fn run_turn(&mut self, now: Timestamp, inputs: Vec<HistoryEvent>) -> Turn {
        let mut turn = Turn::default();
        if self.outcome.is_some() {
            turn.discarded = inputs
                .into_iter()
                .map(|input| (input, "the execution has ended"))
                .collect();
            return turn;
        }
        self.state.borrow_mut().replaying = false;
        turn.events
            .push(HistoryEvent::OrchestratorStarted { at: now });
        self.state.borrow_mut().now = now;
        if let Some(reason) = inputs.iter().find_map(|input| match input {
            HistoryEvent::ExecutionTerminated { reason } => Some(reason.clone()),
            _ => None,
        }) {
            return self.terminate(turn, inputs, reason);
        }
        let mut inputs = inputs.into_iter();
        for input in inputs.by_ref() {
            // Applying live events cannot fail: failures become outcomes.
            let _ = self.apply(input, Mode::Live, &mut turn);
            if self.outcome.is_some() {
                break;
            }
        }
        turn.unprocessed.extend(inputs);
        if let Some(outcome) = &self.outcome {
            turn.events.push(outcome.to_event());
            turn.outcome = Some(outcome.clone());
        }
        if turn.events.len() == 1 && turn.actions.is_empty() && turn.outcome.is_none() {
            // Every input was discarded: nothing happened, so nothing is recorded.
            turn.events.clear();
        }
        turn
    }

    /// External events that arrived and were not read, to carry over `continue_as_new`.
    pub fn take_stored_events(&mut self) -> Vec<(String, Json)> {
        self.state.borrow_mut().take_stored_events()
    }

    /// Ends the execution by a terminate request. The start of the execution, if it is in
    /// the same turn, is recorded; nothing else runs.
    fn terminate(&mut self, mut turn: Turn, inputs: Vec<HistoryEvent>, reason: String) -> Turn {
        for input in inputs {
            match input {
                HistoryEvent::ExecutionStarted { .. } => turn.events.push(input),
                HistoryEvent::ExecutionTerminated { .. } => {}
                other => turn.discarded.push((other, "the instance was terminated")),
            }
        }
        self.end(Outcome::Terminated(reason));
        if let Some(outcome) = &self.outcome {
            turn.events.push(outcome.to_event());
            turn.outcome = Some(outcome.clone());
        }
        turn
    }

    /// The outcome, once the execution has ended.
    #[cfg(test)]
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The value last passed to `set_custom_status`.
    pub fn custom_status(&self) -> Option<Json> {
        self.state.borrow().custom_status.clone()
    }

    /// What the end of the execution must cancel or release: tasks scheduled and not
    /// completed, and locks held.
    pub fn outstanding(&self) -> Vec<Outstanding> {
        let state = self.state.borrow();
        let mut outstanding: Vec<Outstanding> = state
            .outstanding()
            .filter_map(|(id, kind)| match kind {
                TaskKind::Activity { .. } => Some(Outstanding::Activity(id)),
                TaskKind::Timer { fire_at } => Some(Outstanding::Timer(id, *fire_at)),
                TaskKind::SubOrchestration { .. } => Some(Outstanding::SubOrchestration(id)),
                TaskKind::Event { .. }
                | TaskKind::EntityCall { .. }
                | TaskKind::Signal
                | TaskKind::Lock { .. } => None,
            })
            .collect();
        outstanding.extend(
            state
                .unreleased_locks()
                .into_iter()
                .map(|(id, entities)| Outstanding::Locks(id, entities)),
        );
        outstanding
    }

    fn apply(&mut self, event: HistoryEvent, mode: Mode, turn: &mut Turn) -> Result<(), Failure> {
        if mode == Mode::Replay {
            self.replayed += 1;
        }
        match &event {
            HistoryEvent::ExecutionStarted { input, .. } => {
                let input = input.clone();
                if mode == Mode::Live {
                    turn.events.push(event);
                }
                self.start(input);
                self.poll_code(mode, turn);
                Ok(())
            }
            HistoryEvent::OrchestratorStarted { at } => {
                if mode == Mode::Replay {
                    self.check_turn_boundary()?;
                } else {
                    turn.events.push(event.clone());
                }
                self.state.borrow_mut().now = *at;
                Ok(())
            }
            HistoryEvent::TaskScheduled { .. }
            | HistoryEvent::TimerCreated { .. }
            | HistoryEvent::TimerCancelled { .. }
            | HistoryEvent::SubOrchestrationCreated { .. }
            | HistoryEvent::EntityCalled { .. }
            | HistoryEvent::EntitySignaled { .. }
            | HistoryEvent::LocksRequested { .. }
            | HistoryEvent::LocksReleased { .. } => match mode {
                Mode::Replay => self.match_recorded(&event),
                Mode::Live => {
                    turn.discarded.push((event, "actions are not inputs"));
                    Ok(())
                }
            },
            HistoryEvent::TaskCompleted { id, output } => {
                let outcome = Ok(output.clone());
                self.complete(*id, is_activity, outcome, event, mode, turn)
            }
            HistoryEvent::TaskFailed { id, failure } => {
                let outcome = Err(failure.clone());
                self.complete(*id, is_activity, outcome, event, mode, turn)
            }
            HistoryEvent::TimerFired { id } => {
                self.complete(*id, is_timer, Ok(Json::null()), event, mode, turn)
            }
            HistoryEvent::SubOrchestrationCompleted { id, output } => {
                let outcome = Ok(output.clone());
                self.complete(*id, is_sub_orchestration, outcome, event, mode, turn)
            }
            HistoryEvent::SubOrchestrationFailed { id, failure } => {
                let outcome = Err(failure.clone());
                self.complete(*id, is_sub_orchestration, outcome, event, mode, turn)
            }
            HistoryEvent::EventRaised { name, input } => {
                let waker = self.state.borrow_mut().raise_event(name, input.clone());
                if mode == Mode::Live {
                    turn.events.push(event);
                }
                if let Some(waker) = waker {
                    waker.wake();
                }
                self.poll_code(mode, turn);
                Ok(())
            }
            HistoryEvent::EntityCompleted { id, output } => {
                let outcome = Ok(output.clone());
                self.complete(*id, is_entity_call, outcome, event, mode, turn)
            }
            HistoryEvent::EntityFailed { id, failure } => {
                let outcome = Err(failure.clone());
                // A lock request fails too when an entity of it cannot take it (its type is
                // not registered): what it locked so far is released, before the code sees
                // the error (so it is not in a critical section any more).
                let failing_lock =
                    self.state.borrow().slot(*id).is_some_and(|slot| {
                        is_lock(&slot.kind) && !slot.completed && !slot.cancelled
                    });
                if failing_lock {
                    self.state.borrow_mut().release_locks(*id);
                }
                self.complete(*id, is_entity_call_or_lock, outcome, event, mode, turn)
            }
            HistoryEvent::LocksGranted { id, .. } => {
                if self.state.borrow_mut().grant_abandoned_lock(*id) {
                    // Nobody waits for it: recorded, and released at once.
                    if mode == Mode::Live {
                        turn.events.push(event);
                    }
                    self.poll_code(mode, turn);
                    return Ok(());
                }
                self.complete(*id, is_lock, Ok(Json::null()), event, mode, turn)
            }
            HistoryEvent::EntityOperation { .. }
            | HistoryEvent::EntityLockRequest { .. }
            | HistoryEvent::EntityLockRelease { .. } => {
                turn.discarded
                    .push((event, "a message for an entity, not an orchestration"));
                Ok(())
            }
            HistoryEvent::ExecutionSuspended { .. } | HistoryEvent::ExecutionResumed { .. } => {
                // Suspension is the runtime's business; the code does not see it.
                if mode == Mode::Live {
                    turn.events.push(event);
                }
                Ok(())
            }
            HistoryEvent::ExecutionTerminated { reason } => {
                self.end(Outcome::Terminated(reason.clone()));
                Ok(())
            }
            HistoryEvent::ExecutionCompleted { .. }
            | HistoryEvent::ExecutionFailed { .. }
            | HistoryEvent::ContinuedAsNew { .. } => match mode {
                Mode::Replay => {
                    self.end_as_recorded(&event);
                    Ok(())
                }
                Mode::Live => {
                    turn.discarded.push((event, "outcomes are not inputs"));
                    Ok(())
                }
            },
        }
    }

    fn start(&mut self, input: Json) {
        let ctx = OrchestrationContext::new(Rc::clone(&self.state));
        self.future = Some((self.orchestrator)(ctx, input));
        self.wake_flag.0.store(true, Ordering::Relaxed);
    }

    fn complete(
        &mut self,
        id: TaskId,
        expected: fn(&TaskKind) -> bool,
        outcome: Result<Json, Failure>,
        event: HistoryEvent,
        mode: Mode,
        turn: &mut Turn,
    ) -> Result<(), Failure> {
        let completed = self.state.borrow_mut().complete(id, expected, outcome);
        match completed {
            Ok(waker) => {
                if mode == Mode::Live {
                    turn.events.push(event);
                }
                if let Some(waker) = waker {
                    waker.wake();
                }
                self.poll_code(mode, turn);
                Ok(())
            }
            Err(reason) => match mode {
                Mode::Live => {
                    turn.discarded.push((event, reason));
                    Ok(())
                }
                Mode::Replay => Err(self.nondeterminism(format!(
                    "history records {} for task {id}, but {reason} in the code's run",
                    event.kind()
                ))),
            },
        }
    }

    /// Polls the orchestrator if something woke it, then hands its new actions on: in a
    /// live turn they become history events and actions; in replay they wait to be matched.
    fn poll_code(&mut self, mode: Mode, turn: &mut Turn) {
        if let Some(future) = self.future.as_mut()
            && self.wake_flag.0.swap(false, Ordering::Relaxed)
        {
            let mut cx = Context::from_waker(&self.waker);
            let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
            let continue_as_new = self.state.borrow_mut().continue_as_new.take();
            // A panic or an error wins over a `continue_as_new` called before it: a bug must
            // show, not loop.
            let ended = match (polled, continue_as_new) {
                (Err(panic), _) => Some(Outcome::Failed(Failure::new(
                    FailureKind::Panic,
                    format!("the orchestrator panicked: {}", panic_message(&*panic)),
                ))),
                (Ok(Poll::Ready(Err(error))), _) => Some(Outcome::Failed(error.into_failure())),
                (_, Some(input)) => Some(Outcome::ContinuedAsNew(input)),
                (Ok(Poll::Pending), None) => None,
                (Ok(Poll::Ready(Ok(output))), None) => Some(Outcome::Completed(output)),
            };
            if let Some(outcome) = ended {
                self.end(outcome);
            }
        }
        if mode == Mode::Live {
            let mut state = self.state.borrow_mut();
            for action in state.produced.drain(..) {
                turn.events.push(action.to_event());
                turn.actions.push(action);
            }
        }
    }

    fn end(&mut self, outcome: Outcome) {
        // Dropping the future releases everything the orchestrator held; the tasks it drops
        // produce no actions any more (the runtime cancels what is left).
        self.state.borrow_mut().ended = true;
        self.future = None;
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
    }

    fn check_turn_boundary(&self) -> Result<(), Failure> {
        match self.state.borrow().produced.front() {
            Some(action) => Err(self.nondeterminism(format!(
                "the code scheduled {}, which history does not record in that turn",
                action.describe()
            ))),
            None => Ok(()),
        }
    }

    fn match_recorded(&self, event: &HistoryEvent) -> Result<(), Failure> {
        let produced = self.state.borrow_mut().produced.pop_front();
        match produced {
            Some(action) if action.is_recorded_by(event) => {
                if let HistoryEvent::TimerCreated { id, fire_at } = event {
                    // The stored timer is keyed by the recorded due time; keep that one.
                    self.state.borrow_mut().record_fire_at(*id, *fire_at);
                }
                Ok(())
            }
            Some(action) => Err(self.nondeterminism(format!(
                "history records {}, but the code scheduled {}",
                describe_recorded(event),
                action.describe()
            ))),
            None => Err(self.nondeterminism(format!(
                "history records {}, but the code did not schedule it",
                describe_recorded(event)
            ))),
        }
    }

    /// Ends the execution as its history says it ended (replaying an ended execution, for
    /// example to show it).
    fn end_as_recorded(&mut self, event: &HistoryEvent) {
        let recorded = match event {
            HistoryEvent::ExecutionCompleted { output } => Outcome::Completed(output.clone()),
            HistoryEvent::ExecutionFailed { failure } => Outcome::Failed(failure.clone()),
            HistoryEvent::ContinuedAsNew { input } => Outcome::ContinuedAsNew(input.clone()),
            HistoryEvent::ExecutionTerminated { reason } => Outcome::Terminated(reason.clone()),
            _ => return,
        };
        self.future = None;
        self.outcome = Some(recorded);
    }

    fn nondeterminism(&self, detail: String) -> Failure {
        let state = self.state.borrow();
        Failure::new(
            FailureKind::NonDeterminism,
            format!(
                "nondeterminism in instance `{}` (execution {}) at history event {}: {detail}. \
                 The orchestrator's code changed while this instance was running, or it depends \
                 on something that is not replay-safe",
                state.instance,
                state.execution,
                self.replayed.saturating_sub(1)
            ),
        )
    }
}

fn is_terminal(event: &HistoryEvent) -> bool {
    matches!(
        event,
        HistoryEvent::ExecutionCompleted { .. }
            | HistoryEvent::ExecutionFailed { .. }
            | HistoryEvent::ContinuedAsNew { .. }
            | HistoryEvent::ExecutionTerminated { .. }
    )
}

fn is_activity(kind: &TaskKind) -> bool {
    matches!(kind, TaskKind::Activity { .. })
}

fn is_timer(kind: &TaskKind) -> bool {
    matches!(kind, TaskKind::Timer { .. })
}

fn is_sub_orchestration(kind: &TaskKind) -> bool {
    matches!(kind, TaskKind::SubOrchestration { .. })
}

fn is_entity_call(kind: &TaskKind) -> bool {
    matches!(kind, TaskKind::EntityCall { .. })
}

fn is_entity_call_or_lock(kind: &TaskKind) -> bool {
    is_entity_call(kind) || is_lock(kind)
}

fn is_lock(kind: &TaskKind) -> bool {
    matches!(kind, TaskKind::Lock { .. })
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
