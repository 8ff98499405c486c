//! The [`Input`]s waiting for an instance: each with what it asks ([`Content`]) and where
//! it came from ([`Source`]: what consuming it deletes or answers).

use super::super::handle::ReplySender;
use crate::client::IdReuse;
use durable_types::{
    ActivityKey, EntityMessage, ExecutionId, HistoryEvent, InboxKey, InboxMessage, InstanceId,
    Message, TimerKey, Timestamp,
};

/// One input waiting for an instance's next turn (or an entity's next round).
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) content: Content,
    pub(crate) source: Source,
    /// For a client's start: when, and what to do with an instance that has the id.
    pub(crate) terms: StartTerms,
}

/// What a client's start asks beyond the start itself. Every other input (a parent's
/// start of a sub-orchestration too) has the default: at once, replacing only an ended
/// instance. Decided when the start is routed, never stored: a start is never parked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StartTerms {
    /// Not before this time.
    pub(crate) at: Option<Timestamp>,
    pub(crate) reuse: IdReuse,
}

/// What an input asks of its instance.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Content {
    /// An event for an orchestration's history: a start, a task's result, an external
    /// event, a lifecycle request. `execution` is the one it is for (`None`: whichever is
    /// current).
    Event {
        execution: Option<ExecutionId>,
        event: HistoryEvent,
    },
    /// The scheduled start of `execution` came due (its timer fired).
    ScheduledStartDue { execution: ExecutionId },
    /// A request to an entity.
    Entity(EntityMessage),
}

impl Content {
    /// The content of a stored inbox message.
    pub(crate) fn of(message: Message) -> Content {
        match message {
            Message::Event { execution, event } => Content::Event { execution, event },
            Message::Entity(message) => Content::Entity(message),
        }
    }

    /// The inbox message that stores this content for `target`, when it can wait in the
    /// inbox (a scheduled start never waits: it starts its execution or is dropped).
    pub(crate) fn to_message(&self, target: &InstanceId) -> InboxMessage {
        let body = match self {
            Content::Event { execution, event } => Message::Event {
                execution: *execution,
                event: event.clone(),
            },
            Content::Entity(message) => Message::Entity(message.clone()),
            Content::ScheduledStartDue { .. } => {
                unreachable!("a scheduled start is never parked: it starts or is dropped")
            }
        };
        InboxMessage {
            target: target.clone(),
            body,
        }
    }

    /// The execution it names, if it names one.
    pub(crate) fn execution(&self) -> Option<ExecutionId> {
        match self {
            Content::Event { execution, .. } => *execution,
            Content::ScheduledStartDue { execution } => Some(*execution),
            Content::Entity(_) => None,
        }
    }

    /// A short name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Content::Event { event, .. } => event.kind(),
            Content::ScheduledStartDue { .. } => "ScheduledStartDue",
            Content::Entity(message) => message.kind(),
        }
    }
}

/// Where an input came from: what consuming it deletes or answers.
#[derive(Debug)]
pub(crate) enum Source {
    /// A stored inbox message.
    Inbox(InboxKey),
    /// An activity's result; its work item is stored.
    Activity(ActivityKey),
    /// A timer's firing; the timer is stored.
    Timer(TimerKey),
    /// A client's command, answered after the commit that consumes it.
    Client(ReplySender),
}
