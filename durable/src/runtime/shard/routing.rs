//! What a shard does with one input, given where its instance stands: a pure decision
//! table, kept apart from the shard loop so that it reads (and is tested) as a table.

use super::input::{Content, Input};
use crate::client::IdReuse;
use durable_types::{ExecutionId, HistoryEvent, InstanceRecord, RuntimeStatus, Timestamp};

/// Where an instance stands, as far as routing is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
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

impl Lifecycle {
    /// Where an instance with this record stands (`hot`: its engine is in memory, as after
    /// a start in this round, before the start's turn commits).
    pub(crate) fn of(record: Option<&InstanceRecord>, hot: bool) -> Lifecycle {
        match record {
            None => Lifecycle::Absent,
            Some(record) if record.status.is_terminal() => Lifecycle::Ended(record.status),
            Some(record) if record.status == RuntimeStatus::Pending => Lifecycle::Scheduled,
            Some(record) if record.status == RuntimeStatus::Suspended => Lifecycle::Suspended,
            Some(record) if record.history_len == 0 && !hot => Lifecycle::AwaitingStart,
            Some(_) => Lifecycle::Running,
        }
    }
}

/// What an input asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Start a new execution now (a client or a parent), replacing an instance that has
    /// the id as the policy allows.
    Start(IdReuse),
    /// Start a new execution, not before a later time (a client's scheduled start).
    StartLater(IdReuse),
    /// The start message of the execution `continue_as_new` created.
    ContinueStart,
    /// The timer of a scheduled start came due.
    ScheduledStartDue,
    Terminate,
    Suspend,
    Resume,
    /// An external event.
    Event,
    /// A task's result: activity, timer, sub-orchestration.
    Completion,
}

impl Intent {
    /// What an input to an orchestration asks for, at time `now`.
    pub(crate) fn of(input: &Input, now: Timestamp) -> Intent {
        let (execution, event) = match &input.content {
            Content::Event { execution, event } => (execution, event),
            Content::ScheduledStartDue { .. } => return Intent::ScheduledStartDue,
            Content::Entity(message) => {
                unreachable!("a {} message routed to an orchestration", message.kind())
            }
        };
        match event {
            HistoryEvent::ExecutionStarted { .. } if execution.is_some() => Intent::ContinueStart,
            HistoryEvent::ExecutionStarted { .. } if input.terms.at.is_some_and(|at| at > now) => {
                Intent::StartLater(input.terms.reuse)
            }
            HistoryEvent::ExecutionStarted { .. } => Intent::Start(input.terms.reuse),
            HistoryEvent::ExecutionTerminated { .. } => Intent::Terminate,
            HistoryEvent::ExecutionSuspended { .. } => Intent::Suspend,
            HistoryEvent::ExecutionResumed { .. } => Intent::Resume,
            HistoryEvent::EventRaised { .. } => Intent::Event,
            _ => Intent::Completion,
        }
    }
}

/// Whether an input is for the instance's current execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Addressed {
    /// For the current execution, or for whichever is current.
    Current,
    /// For an execution that is no longer (or not yet) the current one.
    Other,
}

impl Addressed {
    /// Whether an input naming `execution` reaches an instance whose current execution is
    /// `current`.
    pub(crate) fn of(execution: Option<ExecutionId>, current: Option<ExecutionId>) -> Addressed {
        if execution.is_none_or(|execution| Some(execution) == current) {
            Addressed::Current
        } else {
            Addressed::Other
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
    /// A start that replaces an execution that has not ended: terminate that one now (with
    /// the inputs routed before the start), then route the start again.
    Replace,
    /// Feed it to the engine in this turn.
    Live,
    /// Park it: keep it (stored durably) until the instance can take it.
    Park,
    /// Nothing to do, and that is fine (suspending a suspended instance).
    Ack,
    /// Refuse it: answer the client, or tell the parent.
    Refuse(Refusal),
    /// It is stale (for an ended or older execution): consume it silently.
    Drop,
}

/// The decision table.
pub(crate) fn decide(lifecycle: Lifecycle, intent: Intent, addressed: Addressed) -> Decision {
    use Decision::*;
    use Lifecycle as L;
    let current = addressed == Addressed::Current;
    match (intent, lifecycle) {
        (Intent::Start(reuse), _) => start(reuse, lifecycle, Begin),
        (Intent::StartLater(reuse), _) => start(reuse, lifecycle, Schedule),

        (Intent::ContinueStart, L::AwaitingStart) if current => Live,
        (Intent::ScheduledStartDue, L::Scheduled) if current => Live,
        (Intent::ContinueStart | Intent::ScheduledStartDue, _) => Drop,

        (_, L::Absent) => Refuse(Refusal::NotFound),
        (_, L::Ended(_)) => Refuse(Refusal::NotRunning),
        (_, _) if !current => Drop,

        (Intent::Terminate, _) => Live,

        (Intent::Suspend, L::Running) => Live,
        (Intent::Suspend, L::Suspended) => Ack,
        (Intent::Suspend, L::Scheduled | L::AwaitingStart) => Park,

        (Intent::Resume, L::Suspended) => Live,
        (Intent::Resume, _) => Ack,

        (Intent::Event | Intent::Completion, L::Running) => Live,
        (Intent::Event, L::Scheduled | L::AwaitingStart | L::Suspended) => Park,
        (Intent::Completion, L::Suspended) => Park,
        (Intent::Completion, L::Scheduled | L::AwaitingStart) => Drop,
    }
}

/// What a start does (`new`: begin or schedule) to an instance standing at `lifecycle`,
/// under id reuse policy `reuse`.
fn start(reuse: IdReuse, lifecycle: Lifecycle, new: Decision) -> Decision {
    match (reuse, lifecycle) {
        (_, Lifecycle::Absent) => new,
        (IdReuse::Never, _) => Decision::Refuse(Refusal::AlreadyExists),
        (IdReuse::IfEnded | IdReuse::TerminateRunning, Lifecycle::Ended(_)) => new,
        (IdReuse::TerminateRunning, _) => Decision::Replace,
        (IdReuse::IfEnded, _) => Decision::Refuse(Refusal::AlreadyExists),
    }
}

/// Where the instance stands after a live input of `intent` went into the turn.
pub(crate) fn after(lifecycle: Lifecycle, intent: Intent) -> Lifecycle {
    match intent {
        Intent::ContinueStart
        | Intent::ScheduledStartDue
        | Intent::Resume
        | Intent::Start(_)
        | Intent::StartLater(_) => Lifecycle::Running,
        Intent::Suspend => Lifecycle::Suspended,
        _ => lifecycle,
    }
}

#[cfg(test)]
mod tests {
    use super::Addressed::{Current, Other};
    use super::Lifecycle as L;
    use super::*;
    use Decision::*;

    #[test]
    fn starts() {
        let start = Intent::Start(IdReuse::IfEnded);
        assert_eq!(decide(L::Absent, start, Current), Begin);
        let completed = L::Ended(RuntimeStatus::Completed);
        assert_eq!(decide(completed, start, Current), Begin);
        let later = Intent::StartLater(IdReuse::IfEnded);
        assert_eq!(decide(L::Absent, later, Current), Schedule);
        assert_eq!(
            decide(L::AwaitingStart, Intent::ContinueStart, Current),
            Live
        );
        assert_eq!(decide(L::AwaitingStart, Intent::ContinueStart, Other), Drop);
        assert_eq!(decide(L::Running, Intent::ContinueStart, Current), Drop);
        assert_eq!(
            decide(L::Scheduled, Intent::ScheduledStartDue, Current),
            Live
        );
        let terminated = L::Ended(RuntimeStatus::Terminated);
        assert_eq!(decide(terminated, Intent::ScheduledStartDue, Current), Drop);
    }

    /// Each id reuse policy against each place an instance can stand, for a start now
    /// (begin) and a scheduled one (schedule).
    #[test]
    fn starts_reuse_ids_as_their_policy_allows() {
        use IdReuse::{IfEnded, Never, TerminateRunning};
        let refused = Refuse(Refusal::AlreadyExists);
        let ended = [
            RuntimeStatus::Completed,
            RuntimeStatus::Failed,
            RuntimeStatus::Terminated,
        ]
        .map(L::Ended);
        let busy = [L::Running, L::Suspended, L::Scheduled, L::AwaitingStart];
        for (intent, new) in [
            (Intent::Start as fn(IdReuse) -> Intent, Begin),
            (Intent::StartLater, Schedule),
        ] {
            for reuse in [IfEnded, Never, TerminateRunning] {
                let decided = decide(L::Absent, intent(reuse), Current);
                assert_eq!(decided, new, "{reuse:?} over no instance");
            }
            for lifecycle in ended {
                let decide = |reuse| decide(lifecycle, intent(reuse), Current);
                assert_eq!(decide(IfEnded), new, "{lifecycle:?}");
                assert_eq!(decide(Never), refused, "{lifecycle:?}");
                assert_eq!(decide(TerminateRunning), new, "{lifecycle:?}");
            }
            for lifecycle in busy {
                let decide = |reuse| decide(lifecycle, intent(reuse), Current);
                assert_eq!(decide(IfEnded), refused, "{lifecycle:?}");
                assert_eq!(decide(Never), refused, "{lifecycle:?}");
                assert_eq!(decide(TerminateRunning), Replace, "{lifecycle:?}");
            }
        }
    }

    #[test]
    fn requests_to_missing_or_ended_instances_are_refused() {
        for intent in [
            Intent::Terminate,
            Intent::Suspend,
            Intent::Resume,
            Intent::Event,
        ] {
            let failed = L::Ended(RuntimeStatus::Failed);
            assert_eq!(
                decide(L::Absent, intent, Current),
                Refuse(Refusal::NotFound)
            );
            assert_eq!(decide(failed, intent, Current), Refuse(Refusal::NotRunning));
        }
    }

    #[test]
    fn suspension_stores_and_resumes() {
        assert_eq!(decide(L::Running, Intent::Suspend, Current), Live);
        assert_eq!(after(L::Running, Intent::Suspend), L::Suspended);
        assert_eq!(decide(L::Suspended, Intent::Event, Current), Park);
        assert_eq!(decide(L::Suspended, Intent::Completion, Current), Park);
        assert_eq!(decide(L::Suspended, Intent::Suspend, Current), Ack);
        assert_eq!(decide(L::Suspended, Intent::Terminate, Current), Live);
        assert_eq!(decide(L::Suspended, Intent::Resume, Current), Live);
        assert_eq!(after(L::Suspended, Intent::Resume), L::Running);
        assert_eq!(decide(L::Running, Intent::Resume, Current), Ack);
    }

    #[test]
    fn inputs_wait_for_the_start_of_their_execution() {
        assert_eq!(decide(L::AwaitingStart, Intent::Event, Current), Park);
        assert_eq!(decide(L::Scheduled, Intent::Event, Current), Park);
        assert_eq!(decide(L::Scheduled, Intent::Suspend, Current), Park);
        assert_eq!(decide(L::Scheduled, Intent::Terminate, Current), Live);
        let older = decide(L::Running, Intent::Completion, Other);
        assert_eq!(older, Drop, "a result for an older execution");
    }

    #[test]
    fn inputs_are_classified_by_what_they_ask() {
        let input = |execution, event, at| Input {
            content: Content::Event { execution, event },
            source: super::super::input::Source::Inbox(durable_types::InboxKey {
                instance: durable_types::InstanceId::new("i").unwrap(),
                seq: 1,
            }),
            terms: super::super::input::StartTerms {
                at,
                ..Default::default()
            },
        };
        let started = || HistoryEvent::ExecutionStarted {
            name: "o".into(),
            input: durable_types::Json::null(),
            parent: None,
            generation: 1,
        };
        let now = Timestamp(100);
        let start = Intent::Start(IdReuse::IfEnded);
        assert_eq!(Intent::of(&input(None, started(), None), now), start);
        let later = input(None, started(), Some(Timestamp(101)));
        let start_later = Intent::StartLater(IdReuse::IfEnded);
        assert_eq!(Intent::of(&later, now), start_later);
        let past = input(None, started(), Some(Timestamp(100)));
        assert_eq!(Intent::of(&past, now), start);
        let next = input(Some(ExecutionId(3)), started(), None);
        assert_eq!(Intent::of(&next, now), Intent::ContinueStart);
        let fired = HistoryEvent::TimerFired {
            id: durable_types::TaskId(0),
        };
        assert_eq!(
            Intent::of(&input(None, fired, None), now),
            Intent::Completion
        );
        assert_eq!(Addressed::of(None, Some(ExecutionId(2))), Current);
        assert_eq!(
            Addressed::of(Some(ExecutionId(2)), Some(ExecutionId(2))),
            Current
        );
        assert_eq!(
            Addressed::of(Some(ExecutionId(1)), Some(ExecutionId(2))),
            Other
        );
    }
}
