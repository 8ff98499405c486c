//! What a shard does with one input, given the state of its instance: a pure decision
//! table, kept apart from the shard loop so that it reads (and is tested) as a table.

use durable_store::{HistoryEvent, InstanceRecord, RuntimeStatus, TaskId};

/// The task id of a scheduled start's timer: larger than any real task id.
pub(crate) const SCHEDULED_START_TASK: TaskId = TaskId(u64::MAX);

/// The state of an instance, as far as routing is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No such instance.
    Absent,
    /// Completed, failed or terminated.
    Ended(RuntimeStatus),
    /// Created by a scheduled start that has not come due.
    Scheduled,
    /// Created by `continue_as_new`; its start message has not been processed.
    AwaitingStart,
    /// Suspended: stores what arrives, runs no turn.
    Suspended,
    /// Running.
    Running,
}

impl Mode {
    /// The mode of an instance with this record (`hot`: its engine is in memory).
    pub(crate) fn of(record: Option<&InstanceRecord>, hot: bool) -> Mode {
        match record {
            None => Mode::Absent,
            Some(record) if record.status.is_terminal() => Mode::Ended(record.status),
            Some(record) if record.status == RuntimeStatus::Pending => Mode::Scheduled,
            Some(record) if record.status == RuntimeStatus::Suspended => Mode::Suspended,
            Some(record) if record.history_len == 0 && !hot => Mode::AwaitingStart,
            Some(_) => Mode::Running,
        }
    }
}

/// What an input asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Start a new execution (client or parent); `scheduled`: not before a later time.
    Start {
        scheduled: bool,
    },
    /// The start message of the execution `continue_as_new` created.
    ContinueStart,
    /// The timer of a scheduled start came due.
    ScheduledStartFired,
    Terminate,
    Suspend,
    Resume,
    /// An external event.
    Event,
    /// A task's result: activity, timer, sub-orchestration.
    Completion,
}

impl Kind {
    /// Classifies an input event; `for_execution` tells whether it names an execution.
    pub(crate) fn of(event: &HistoryEvent, for_execution: bool, scheduled: bool) -> Kind {
        match event {
            HistoryEvent::ExecutionStarted { .. } if for_execution => Kind::ContinueStart,
            HistoryEvent::ExecutionStarted { .. } => Kind::Start { scheduled },
            HistoryEvent::TimerFired { id } if *id == SCHEDULED_START_TASK => {
                Kind::ScheduledStartFired
            }
            HistoryEvent::ExecutionTerminated { .. } => Kind::Terminate,
            HistoryEvent::ExecutionSuspended { .. } => Kind::Suspend,
            HistoryEvent::ExecutionResumed { .. } => Kind::Resume,
            HistoryEvent::EventRaised { .. } => Kind::Event,
            _ => Kind::Completion,
        }
    }
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A start for an id that is not ended.
    AlreadyExists,
    /// A request for an instance that does not exist.
    NotFound,
    /// A request that needs a running instance, for one that has ended.
    NotRunning,
}

/// What to do with an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Create a new execution and feed it this start.
    Begin,
    /// Record a scheduled start: a pending instance and the timer that will start it.
    Schedule,
    /// Feed it to the engine in this turn.
    Live,
    /// Keep it (stored durably) until the instance can take it.
    Defer,
    /// Nothing to do, and that is fine (suspending a suspended instance).
    Ack,
    /// Refuse it: answer the client, or tell the parent.
    Refuse(Refusal),
    /// It is stale (for an ended or older execution): consume it silently.
    Drop,
}

/// The decision table. `current`: the input is for the current execution (or for
/// whichever is current).
pub(crate) fn decide(mode: Mode, kind: Kind, current: bool) -> Decision {
    use Decision::*;
    match (kind, mode) {
        (Kind::Start { scheduled }, Mode::Absent | Mode::Ended(_)) => {
            if scheduled {
                Schedule
            } else {
                Begin
            }
        }
        (Kind::Start { .. }, _) => Refuse(Refusal::AlreadyExists),

        (Kind::ContinueStart, Mode::AwaitingStart) if current => Live,
        (Kind::ScheduledStartFired, Mode::Scheduled) if current => Live,
        (Kind::ContinueStart | Kind::ScheduledStartFired, _) => Drop,

        (_, Mode::Absent) => Refuse(Refusal::NotFound),
        (_, Mode::Ended(_)) => Refuse(Refusal::NotRunning),
        (_, _) if !current => Drop,

        (Kind::Terminate, _) => Live,

        (Kind::Suspend, Mode::Running) => Live,
        (Kind::Suspend, Mode::Suspended) => Ack,
        (Kind::Suspend, Mode::Scheduled | Mode::AwaitingStart) => Defer,

        (Kind::Resume, Mode::Suspended) => Live,
        (Kind::Resume, _) => Ack,

        (Kind::Event | Kind::Completion, Mode::Running) => Live,
        (Kind::Event, Mode::Scheduled | Mode::AwaitingStart | Mode::Suspended) => Defer,
        (Kind::Completion, Mode::Suspended) => Defer,
        (Kind::Completion, Mode::Scheduled | Mode::AwaitingStart) => Drop,
    }
}

/// The mode after a live input of `kind` went into the turn.
pub(crate) fn next_mode(mode: Mode, kind: Kind) -> Mode {
    match kind {
        Kind::ContinueStart | Kind::ScheduledStartFired | Kind::Resume | Kind::Start { .. } => {
            Mode::Running
        }
        Kind::Suspend => Mode::Suspended,
        _ => mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    #[test]
    fn starts() {
        let start = Kind::Start { scheduled: false };
        assert_eq!(decide(Mode::Absent, start, true), Begin);
        assert_eq!(
            decide(Mode::Ended(RuntimeStatus::Completed), start, true),
            Begin
        );
        assert_eq!(
            decide(Mode::Absent, Kind::Start { scheduled: true }, true),
            Schedule
        );
        for busy in [
            Mode::Running,
            Mode::Suspended,
            Mode::Scheduled,
            Mode::AwaitingStart,
        ] {
            assert_eq!(
                decide(busy, start, true),
                Refuse(Refusal::AlreadyExists),
                "{busy:?}"
            );
        }
        assert_eq!(decide(Mode::AwaitingStart, Kind::ContinueStart, true), Live);
        assert_eq!(
            decide(Mode::AwaitingStart, Kind::ContinueStart, false),
            Drop
        );
        assert_eq!(decide(Mode::Running, Kind::ContinueStart, true), Drop);
        assert_eq!(
            decide(Mode::Scheduled, Kind::ScheduledStartFired, true),
            Live
        );
        assert_eq!(
            decide(
                Mode::Ended(RuntimeStatus::Terminated),
                Kind::ScheduledStartFired,
                true
            ),
            Drop
        );
    }

    #[test]
    fn requests_to_missing_or_ended_instances_are_refused() {
        for kind in [Kind::Terminate, Kind::Suspend, Kind::Resume, Kind::Event] {
            assert_eq!(decide(Mode::Absent, kind, true), Refuse(Refusal::NotFound));
            assert_eq!(
                decide(Mode::Ended(RuntimeStatus::Failed), kind, true),
                Refuse(Refusal::NotRunning)
            );
        }
    }

    #[test]
    fn suspension_stores_and_resumes() {
        assert_eq!(decide(Mode::Running, Kind::Suspend, true), Live);
        assert_eq!(next_mode(Mode::Running, Kind::Suspend), Mode::Suspended);
        assert_eq!(decide(Mode::Suspended, Kind::Event, true), Defer);
        assert_eq!(decide(Mode::Suspended, Kind::Completion, true), Defer);
        assert_eq!(decide(Mode::Suspended, Kind::Suspend, true), Ack);
        assert_eq!(decide(Mode::Suspended, Kind::Terminate, true), Live);
        assert_eq!(decide(Mode::Suspended, Kind::Resume, true), Live);
        assert_eq!(next_mode(Mode::Suspended, Kind::Resume), Mode::Running);
        assert_eq!(decide(Mode::Running, Kind::Resume, true), Ack);
    }

    #[test]
    fn inputs_wait_for_the_start_of_their_execution() {
        assert_eq!(decide(Mode::AwaitingStart, Kind::Event, true), Defer);
        assert_eq!(decide(Mode::Scheduled, Kind::Event, true), Defer);
        assert_eq!(decide(Mode::Scheduled, Kind::Suspend, true), Defer);
        assert_eq!(decide(Mode::Scheduled, Kind::Terminate, true), Live);
        assert_eq!(
            decide(Mode::Running, Kind::Completion, false),
            Drop,
            "older execution"
        );
    }
}
