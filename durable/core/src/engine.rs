//! [`Engine`]: drives one execution of an orchestrator. It turns (history so far, new
//! events) into (events to append, actions to perform, outcome), polling the orchestrator's
//! future in between. It does no I/O and reads no clock: the time of a turn is an input.
//!
//! Replay and live turns share one rule, which is what makes replay reproduce the live run:
//! events are applied one at a time, in history order, and the orchestrator is polled after
//! each event that woke it. During replay, each action the code produces must be matched by
//! the history event that recorded it; any mismatch is nondeterminism and fails the
//! execution instead of silently diverging.

use crate::context::OrchestrationContext;
use crate::error::Error;
use crate::function::{LocalBoxFuture, OrchestratorFn};
use crate::history::Outstanding;
use crate::state::{State, TaskKind};
use crate::turn::{Outcome, Turn, describe_recorded};
use durable_types::{
    ExecutionId, Failure, FailureKind, HistoryEvent, InstanceId, Json, TaskId, Timestamp,
};
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Whether an event is replayed from history or consumed live. Both follow one rule
/// (apply, then poll if woken); they differ in what happens to the events and actions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Replaying the recorded history: actions the code produces must match it.
    Replay,
    /// A live turn: inputs and produced actions become new history.
    Live,
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
            self.apply(event.clone(), Pass::Replay, &mut sink)?;
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
            let _ = self.apply(input, Pass::Live, &mut turn);
            if self.outcome.is_some() {
                break;
            }
        }
        turn.unprocessed.extend(inputs);
        if let Some(outcome) = &self.outcome {
            turn.events.push(outcome.to_event());
            turn.outcome = Some(outcome.clone());
        }
        if turn.is_empty() {
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

    /// What the end of the execution must cancel or release, in task order: tasks
    /// scheduled and not completed, and lock requests not released. The same as
    /// [`Ledger::outstanding`](crate::Ledger::outstanding) of the history, from the code's
    /// side.
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
        outstanding.sort_by_key(Outstanding::task);
        outstanding
    }

    /// Applies one event — replayed from history or consumed live — and polls the code if
    /// the event woke it.
    fn apply(&mut self, event: HistoryEvent, pass: Pass, turn: &mut Turn) -> Result<(), Failure> {
        if pass == Pass::Replay {
            self.replayed += 1;
        }
        match &event {
            HistoryEvent::ExecutionStarted {
                name,
                input,
                generation,
                ..
            } => {
                let input = input.clone();
                let mut state = self.state.borrow_mut();
                state.generation = *generation;
                state.orchestrator.clone_from(name);
                drop(state);
                self.record_live(event, pass, turn);
                self.start(input);
                self.poll_code(pass, turn);
                Ok(())
            }
            HistoryEvent::OrchestratorStarted { at } => {
                let at = *at;
                if pass == Pass::Replay {
                    self.check_turn_boundary()?;
                }
                self.record_live(event, pass, turn);
                self.state.borrow_mut().now = at;
                Ok(())
            }
            HistoryEvent::TaskScheduled { .. }
            | HistoryEvent::TaskCancelled { .. }
            | HistoryEvent::TimerCreated { .. }
            | HistoryEvent::TimerCancelled { .. }
            | HistoryEvent::SubOrchestrationCreated { .. }
            | HistoryEvent::EntityCalled { .. }
            | HistoryEvent::EntitySignaled { .. }
            | HistoryEvent::LocksRequested { .. }
            | HistoryEvent::LocksReleased { .. } => self.apply_recorded_action(event, pass, turn),
            HistoryEvent::TaskCompleted { .. }
            | HistoryEvent::TaskFailed { .. }
            | HistoryEvent::TimerFired { .. }
            | HistoryEvent::SubOrchestrationCompleted { .. }
            | HistoryEvent::SubOrchestrationFailed { .. }
            | HistoryEvent::EntityCompleted { .. }
            | HistoryEvent::EntityFailed { .. }
            | HistoryEvent::LocksGranted { .. } => self.apply_completion(event, pass, turn),
            HistoryEvent::EventRaised { name, input } => {
                let waker = self.state.borrow_mut().raise_event(name, input.clone());
                self.record_live(event, pass, turn);
                wake(waker);
                self.poll_code(pass, turn);
                Ok(())
            }
            HistoryEvent::ExecutionSuspended { .. } | HistoryEvent::ExecutionResumed { .. } => {
                // Suspension is the runtime's business; the code does not see it.
                self.record_live(event, pass, turn);
                Ok(())
            }
            HistoryEvent::ExecutionTerminated { reason } => {
                self.end(Outcome::Terminated(reason.clone()));
                Ok(())
            }
            HistoryEvent::ExecutionCompleted { .. }
            | HistoryEvent::ExecutionFailed { .. }
            | HistoryEvent::ContinuedAsNew { .. } => self.apply_outcome(event, pass, turn),
        }
    }

    /// An event that records an action: in replay, the code must have produced that action;
    /// live, it is not an input.
    fn apply_recorded_action(
        &mut self,
        event: HistoryEvent,
        pass: Pass,
        turn: &mut Turn,
    ) -> Result<(), Failure> {
        match pass {
            Pass::Replay => self.match_recorded(&event),
            Pass::Live => {
                turn.discarded.push((event, "actions are not inputs"));
                Ok(())
            }
        }
    }

    /// An event that records how the execution ended: in replay, it ends as recorded;
    /// live, it is not an input.
    fn apply_outcome(
        &mut self,
        event: HistoryEvent,
        pass: Pass,
        turn: &mut Turn,
    ) -> Result<(), Failure> {
        match pass {
            Pass::Replay => self.end_as_recorded(&event),
            Pass::Live => turn.discarded.push((event, "outcomes are not inputs")),
        }
        Ok(())
    }

    /// Applies the completion of a task: its outcome goes to the task, whose waiter runs.
    fn apply_completion(
        &mut self,
        event: HistoryEvent,
        pass: Pass,
        turn: &mut Turn,
    ) -> Result<(), Failure> {
        let (id, expected, outcome): (TaskId, fn(&TaskKind) -> bool, _) = match &event {
            HistoryEvent::TaskCompleted { id, output } => (*id, is_activity, Ok(output.clone())),
            HistoryEvent::TaskFailed { id, failure } => (*id, is_activity, Err(failure.clone())),
            HistoryEvent::TimerFired { id } => (*id, is_timer, Ok(Json::null())),
            HistoryEvent::SubOrchestrationCompleted { id, output } => {
                (*id, is_sub_orchestration, Ok(output.clone()))
            }
            HistoryEvent::SubOrchestrationFailed { id, failure } => {
                (*id, is_sub_orchestration, Err(failure.clone()))
            }
            HistoryEvent::EntityCompleted { id, output } => {
                (*id, is_entity_call, Ok(output.clone()))
            }
            HistoryEvent::EntityFailed { id, failure } => {
                self.release_failed_lock(*id);
                (*id, is_entity_call_or_lock, Err(failure.clone()))
            }
            HistoryEvent::LocksGranted { id, .. } => {
                if self.state.borrow_mut().grant_abandoned_lock(*id) {
                    // Nobody waits for it: recorded, and released at once.
                    self.record_live(event, pass, turn);
                    self.poll_code(pass, turn);
                    return Ok(());
                }
                (*id, is_lock, Ok(Json::null()))
            }
            other => unreachable!("{} is not a completion", other.kind()),
        };
        self.complete(id, expected, outcome, event, pass, turn)
    }

    /// A lock request fails when an entity of it cannot take it (its type is not
    /// registered): what it locked so far is released before the code sees the error, so
    /// the code is not in a critical section any more.
    fn release_failed_lock(&mut self, id: TaskId) {
        let failing_lock = self
            .state
            .borrow()
            .task(id)
            .is_some_and(|task| is_lock(&task.kind) && !task.completed && !task.cancelled);
        if failing_lock {
            self.state.borrow_mut().release_locks(id);
        }
    }

    /// A live event goes into the turn's history; a replayed one is there already.
    fn record_live(&self, event: HistoryEvent, pass: Pass, turn: &mut Turn) {
        if pass == Pass::Live {
            turn.events.push(event);
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
        pass: Pass,
        turn: &mut Turn,
    ) -> Result<(), Failure> {
        let completed = self.state.borrow_mut().complete(id, expected, outcome);
        match completed {
            Ok(waker) => {
                self.record_live(event, pass, turn);
                wake(waker);
                self.poll_code(pass, turn);
                Ok(())
            }
            Err(reason) => match pass {
                Pass::Live => {
                    turn.discarded.push((event, reason));
                    Ok(())
                }
                Pass::Replay => Err(self.nondeterminism(format!(
                    "history records {} for task {id}, but {reason} in the code's run",
                    event.kind()
                ))),
            },
        }
    }

    /// Polls the orchestrator if something woke it, then hands its new actions on: in a
    /// live turn they become history events and actions; in replay they wait to be matched.
    fn poll_code(&mut self, pass: Pass, turn: &mut Turn) {
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
                (_, Some(Ok(input))) => Some(Outcome::ContinuedAsNew(input)),
                (_, Some(Err(failure))) => Some(Outcome::Failed(failure)),
                (Ok(Poll::Pending), None) => None,
                (Ok(Poll::Ready(Ok(output))), None) => Some(Outcome::Completed(output)),
            };
            if let Some(outcome) = ended {
                self.end(outcome);
            }
        }
        if pass == Pass::Live {
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

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
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
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
