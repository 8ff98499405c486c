//! [`Ledger`]: what a history says, read from its events alone — no orchestrator code
//! runs. It knows every task the history scheduled and where each stands, and whether the
//! execution has started and ended. From that follow what an ending execution must cancel
//! or release ([`Ledger::outstanding`]), whether a new input applies ([`Ledger::applies`]),
//! and, for code that runs elsewhere (a worker in another language that replays its own
//! orchestrator and sends back the actions of a turn), how those inputs and actions become
//! the turn's events ([`Ledger::turn`]).
//!
//! The [`Engine`](crate::Engine) keeps the same facts from the code's side (it also knows
//! what the code dropped before the history recorded it); a test holds the two to the
//! same answer.

use crate::turn::{Action, Outcome, Turn};
use durable_types::{EntityId, HistoryEvent, TaskId, Timestamp};
use std::collections::BTreeMap;

/// A task of the execution that has not completed, or (for locks) not been released: what
/// the end of the execution must cancel or release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outstanding {
    /// An activity.
    Activity(TaskId),
    /// A timer, with its due time.
    Timer(TaskId, Timestamp),
    /// A sub-orchestration.
    SubOrchestration(TaskId),
    /// Entity locks requested or held.
    Locks(TaskId, Vec<EntityId>),
}

impl Outstanding {
    /// The task it is.
    pub fn task(&self) -> TaskId {
        match self {
            Outstanding::Activity(id)
            | Outstanding::Timer(id, _)
            | Outstanding::SubOrchestration(id)
            | Outstanding::Locks(id, _) => *id,
        }
    }
}

/// What kind of task a history scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Activity,
    Timer(Timestamp),
    SubOrchestration,
    EntityCall,
    Signal,
    Locks(Vec<EntityId>),
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Scheduled; its completion has not come.
    Open,
    /// A lock request whose grant came: the locks are held until released.
    Granted,
    /// A lock request that failed (an entity of it could not take it): what it locked so
    /// far is still to be released.
    Refused,
    /// Its completion came (for locks: they were released).
    Done,
    /// The code stopped waiting for it (a cancelled timer or activity).
    Cancelled,
}

/// What a history says about its execution. Build it with [`Ledger::from_history`], keep
/// it current with [`Ledger::record`].
///
/// ```
/// use durable_core::{Action, Ledger, Outstanding};
/// use durable_types::{HistoryEvent, Json, TaskId, Timestamp};
///
/// // A worker elsewhere saw the start and asked for an activity.
/// let mut ledger = Ledger::new();
/// let start = HistoryEvent::ExecutionStarted {
///     name: "chain".into(), input: Json::null(), parent: None, generation: 1,
/// };
/// let schedule = Action::ScheduleActivity {
///     id: TaskId(0), name: "charge".into(), input: Json::null(), retry: None,
/// };
/// let turn = ledger.turn(Timestamp(1_000), vec![start], vec![schedule], None);
/// assert_eq!(turn.events.len(), 3); // OrchestratorStarted, ExecutionStarted, TaskScheduled
/// assert_eq!(ledger.outstanding(), vec![Outstanding::Activity(TaskId(0))]);
///
/// // A second result for the same task does not apply.
/// let done = HistoryEvent::TaskCompleted { id: TaskId(0), output: Json::null() };
/// ledger.record(&done);
/// assert_eq!(ledger.applies(&done), Err("the task already completed"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    tasks: BTreeMap<TaskId, (Kind, Progress)>,
    started: bool,
    ended: bool,
}

impl Ledger {
    /// The ledger of an empty history.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// The ledger of `history`.
    pub fn from_history(history: &[HistoryEvent]) -> Ledger {
        let mut ledger = Ledger::new();
        for event in history {
            ledger.record(event);
        }
        ledger
    }

    /// Whether the execution's start is recorded.
    pub fn has_started(&self) -> bool {
        self.started
    }

    /// Whether the execution's end is recorded.
    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Takes one more event of the history into account.
    pub fn record(&mut self, event: &HistoryEvent) {
        match event {
            HistoryEvent::ExecutionStarted { .. } => self.started = true,
            HistoryEvent::TaskScheduled { id, .. } => self.open(*id, Kind::Activity),
            HistoryEvent::TimerCreated { id, fire_at } => self.open(*id, Kind::Timer(*fire_at)),
            HistoryEvent::SubOrchestrationCreated { id, .. } => {
                self.open(*id, Kind::SubOrchestration);
            }
            HistoryEvent::EntityCalled { id, .. } => self.open(*id, Kind::EntityCall),
            HistoryEvent::EntitySignaled { id, .. } => {
                self.tasks.insert(*id, (Kind::Signal, Progress::Done));
            }
            HistoryEvent::LocksRequested { id, entities } => {
                self.open(*id, Kind::Locks(entities.clone()));
            }
            HistoryEvent::LocksGranted { id, .. } => self.progress(*id, Progress::Granted),
            HistoryEvent::LocksReleased { id } => self.progress(*id, Progress::Done),
            HistoryEvent::TimerCancelled { id } | HistoryEvent::TaskCancelled { id } => {
                self.progress(*id, Progress::Cancelled);
            }
            HistoryEvent::EntityFailed { id, .. } if self.is_locks(*id) => {
                self.progress(*id, Progress::Refused);
            }
            HistoryEvent::TaskCompleted { id, .. }
            | HistoryEvent::TaskFailed { id, .. }
            | HistoryEvent::TimerFired { id }
            | HistoryEvent::SubOrchestrationCompleted { id, .. }
            | HistoryEvent::SubOrchestrationFailed { id, .. }
            | HistoryEvent::EntityCompleted { id, .. }
            | HistoryEvent::EntityFailed { id, .. } => self.progress(*id, Progress::Done),
            HistoryEvent::ExecutionCompleted { .. }
            | HistoryEvent::ExecutionFailed { .. }
            | HistoryEvent::ContinuedAsNew { .. }
            | HistoryEvent::ExecutionTerminated { .. } => self.ended = true,
            HistoryEvent::OrchestratorStarted { .. }
            | HistoryEvent::EventRaised { .. }
            | HistoryEvent::ExecutionSuspended { .. }
            | HistoryEvent::ExecutionResumed { .. } => {}
        }
    }

    fn open(&mut self, id: TaskId, kind: Kind) {
        self.tasks.insert(id, (kind, Progress::Open));
    }

    fn progress(&mut self, id: TaskId, progress: Progress) {
        if let Some((_, current)) = self.tasks.get_mut(&id) {
            *current = progress;
        }
    }

    fn is_locks(&self, id: TaskId) -> bool {
        matches!(self.tasks.get(&id), Some((Kind::Locks(_), _)))
    }

    /// What the end of the execution must cancel or release, in task order: activities,
    /// timers and sub-orchestrations not completed, and lock requests not released
    /// (granted or not: a release reaching an entity the request has not locked is
    /// ignored).
    pub fn outstanding(&self) -> Vec<Outstanding> {
        self.tasks
            .iter()
            .filter_map(|(id, (kind, progress))| match (kind, progress) {
                (Kind::Activity, Progress::Open) => Some(Outstanding::Activity(*id)),
                (Kind::Timer(fire_at), Progress::Open) => Some(Outstanding::Timer(*id, *fire_at)),
                (Kind::SubOrchestration, Progress::Open) => {
                    Some(Outstanding::SubOrchestration(*id))
                }
                (Kind::Locks(entities), Progress::Open | Progress::Granted | Progress::Refused) => {
                    Some(Outstanding::Locks(*id, entities.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether `input`, a new message for the execution, applies to it; if not, why it is
    /// discarded (a duplicate, a result for a task that does not wait for it, an event that
    /// is not an input).
    ///
    /// # Errors
    /// The reason the input does not apply.
    pub fn applies(&self, input: &HistoryEvent) -> Result<(), &'static str> {
        if self.ended {
            return Err("the execution has ended");
        }
        let wanted: fn(&Kind, Progress) -> bool = match input {
            HistoryEvent::ExecutionStarted { .. } if self.started => {
                return Err("the execution has already started");
            }
            HistoryEvent::ExecutionStarted { .. }
            | HistoryEvent::EventRaised { .. }
            | HistoryEvent::ExecutionSuspended { .. }
            | HistoryEvent::ExecutionResumed { .. }
            | HistoryEvent::ExecutionTerminated { .. } => return Ok(()),
            HistoryEvent::OrchestratorStarted { .. } => return Err("turn markers are not inputs"),
            HistoryEvent::TaskScheduled { .. }
            | HistoryEvent::TaskCancelled { .. }
            | HistoryEvent::TimerCreated { .. }
            | HistoryEvent::TimerCancelled { .. }
            | HistoryEvent::SubOrchestrationCreated { .. }
            | HistoryEvent::EntityCalled { .. }
            | HistoryEvent::EntitySignaled { .. }
            | HistoryEvent::LocksRequested { .. }
            | HistoryEvent::LocksReleased { .. } => return Err("actions are not inputs"),
            HistoryEvent::ExecutionCompleted { .. }
            | HistoryEvent::ExecutionFailed { .. }
            | HistoryEvent::ContinuedAsNew { .. } => return Err("outcomes are not inputs"),
            HistoryEvent::TaskCompleted { .. } | HistoryEvent::TaskFailed { .. } => {
                |kind, progress| *kind == Kind::Activity && progress == Progress::Open
            }
            HistoryEvent::TimerFired { .. } => {
                |kind, progress| matches!(kind, Kind::Timer(_)) && progress == Progress::Open
            }
            HistoryEvent::SubOrchestrationCompleted { .. }
            | HistoryEvent::SubOrchestrationFailed { .. } => {
                |kind, progress| *kind == Kind::SubOrchestration && progress == Progress::Open
            }
            HistoryEvent::EntityCompleted { .. } => {
                |kind, progress| *kind == Kind::EntityCall && progress == Progress::Open
            }
            HistoryEvent::EntityFailed { .. } => |kind, progress| {
                matches!(kind, Kind::EntityCall | Kind::Locks(_)) && progress == Progress::Open
            },
            HistoryEvent::LocksGranted { .. } => {
                |kind, progress| matches!(kind, Kind::Locks(_)) && progress == Progress::Open
            }
        };
        let id = completed_task(input).ok_or("no such task")?;
        match self.tasks.get(&id) {
            None => Err("no such task"),
            Some((kind, progress)) if wanted(kind, *progress) => Ok(()),
            Some((_, Progress::Cancelled)) => Err("the orchestrator cancelled the task"),
            Some((_, Progress::Open)) => Err("the task is of another kind"),
            Some(_) => Err("the task already completed"),
        }
    }

    /// One turn of code that ran elsewhere: at time `now`, the execution consumed `inputs`,
    /// then its code produced `actions` and, if it ended, `outcome`. Returns the turn as
    /// the [`Engine`](crate::Engine) would for the same code, with every input event first
    /// and the recorded actions after them, and takes it into the ledger.
    ///
    /// Inputs that do not apply are discarded (and listed as such). A terminate request
    /// takes precedence, as in the engine: the execution ends, its start (if in this
    /// turn) is recorded, and nothing else is.
    pub fn turn(
        &mut self,
        now: Timestamp,
        inputs: Vec<HistoryEvent>,
        actions: Vec<Action>,
        outcome: Option<Outcome>,
    ) -> Turn {
        let mut turn = Turn::default();
        if self.ended {
            turn.discarded = inputs
                .into_iter()
                .map(|input| (input, "the execution has ended"))
                .collect();
            return turn;
        }
        turn.events
            .push(HistoryEvent::OrchestratorStarted { at: now });
        let terminated = inputs.iter().find_map(|input| match input {
            HistoryEvent::ExecutionTerminated { reason } => Some(reason.clone()),
            _ => None,
        });
        if let Some(reason) = terminated {
            self.terminate(&mut turn, inputs, reason);
            return turn;
        }
        for input in inputs {
            match self.applies(&input) {
                Ok(()) => self.append(&mut turn, input),
                Err(reason) => turn.discarded.push((input, reason)),
            }
        }
        for action in actions {
            self.append(&mut turn, action.to_event());
            turn.actions.push(action);
        }
        if let Some(outcome) = outcome {
            self.append(&mut turn, outcome.to_event());
            turn.outcome = Some(outcome);
        }
        if turn.is_empty() {
            turn.events.clear();
        }
        turn
    }

    fn terminate(&mut self, turn: &mut Turn, inputs: Vec<HistoryEvent>, reason: String) {
        for input in inputs {
            match input {
                HistoryEvent::ExecutionStarted { .. } => self.append(turn, input),
                HistoryEvent::ExecutionTerminated { .. } => {}
                other => turn.discarded.push((other, "the instance was terminated")),
            }
        }
        let outcome = Outcome::Terminated(reason);
        self.append(turn, outcome.to_event());
        turn.outcome = Some(outcome);
    }

    fn append(&mut self, turn: &mut Turn, event: HistoryEvent) {
        self.record(&event);
        turn.events.push(event);
    }
}

/// The task a completion event completes.
fn completed_task(event: &HistoryEvent) -> Option<TaskId> {
    match event {
        HistoryEvent::TaskCompleted { id, .. }
        | HistoryEvent::TaskFailed { id, .. }
        | HistoryEvent::TimerFired { id }
        | HistoryEvent::SubOrchestrationCompleted { id, .. }
        | HistoryEvent::SubOrchestrationFailed { id, .. }
        | HistoryEvent::EntityCompleted { id, .. }
        | HistoryEvent::EntityFailed { id, .. }
        | HistoryEvent::LocksGranted { id, .. } => Some(*id),
        _ => None,
    }
}
