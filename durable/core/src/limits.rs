//! [`Limits`]: the bounds on what one instance may hold or do, so that a runaway
//! orchestration or an oversized payload gets a clear error instead of exhausting memory
//! or disk. [`Limits::check_payload`] is the one rule for every payload (an input, an
//! output, an event, an entity's state); [`check_turn`] holds a turn to the limits. A turn
//! over a limit is not committed; its execution fails with [`FailureKind::LimitExceeded`]
//! and a message that says what to do instead.

use crate::turn::{Action, Outcome, Turn};
use durable_types::{Failure, FailureKind, INSTANCE_ID_MAX_LEN, Json};
use std::fmt;

/// The bounds an instance is held to. The runtime's builder sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest JSON payload, in bytes: an input, an output, an event, an entity
    /// operation's input or an entity's state.
    pub max_payload_bytes: usize,
    /// The most actions (activities, timers, sub-orchestrations, entity messages) one
    /// orchestrator turn may schedule.
    pub max_actions_per_turn: usize,
    /// The history length at which a warning advises `continue_as_new`.
    pub history_warning_events: u64,
    /// The longest instance id a client may start, in characters (at most
    /// [`INSTANCE_ID_MAX_LEN`]).
    pub max_instance_id_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 16 * 1024 * 1024,
            max_actions_per_turn: 100_000,
            history_warning_events: 10_000,
            max_instance_id_len: INSTANCE_ID_MAX_LEN,
        }
    }
}

impl Limits {
    /// `Ok` when a payload of `bytes` bytes is within [`Limits::max_payload_bytes`];
    /// `what` names it for the error ("input of activity `charge`").
    ///
    /// # Errors
    /// [`PayloadTooLarge`], whose message says what to do instead.
    pub fn check_payload(
        &self,
        bytes: usize,
        what: impl FnOnce() -> String,
    ) -> Result<(), PayloadTooLarge> {
        if bytes <= self.max_payload_bytes {
            return Ok(());
        }
        Err(PayloadTooLarge {
            what: what(),
            bytes,
            limit: self.max_payload_bytes,
        })
    }
}

/// A payload larger than [`Limits::max_payload_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadTooLarge {
    /// What it was: "input of orchestrator `x`", "data of event `e`", ...
    pub what: String,
    /// Its size as JSON text.
    pub bytes: usize,
    /// The limit.
    pub limit: usize,
}

impl fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} is {} bytes, above the limit of {} bytes (max_payload_bytes); keep large data elsewhere and pass a reference to it",
            self.what, self.bytes, self.limit
        )
    }
}

impl std::error::Error for PayloadTooLarge {}

impl PayloadTooLarge {
    /// The failure that ends what produced it (a turn, an activity, an operation).
    pub fn into_failure(self) -> Failure {
        Failure::new(FailureKind::LimitExceeded, self.to_string())
    }
}

/// `Ok` when `turn` (with the execution's `custom_status`) is within `limits`, else the
/// failure to end its execution with.
pub fn check_turn(
    turn: &Turn,
    custom_status: Option<&Json>,
    limits: &Limits,
) -> Result<(), Failure> {
    let scheduled = turn
        .actions
        .iter()
        .filter(|action| {
            !matches!(
                action,
                Action::CancelTimer { .. } | Action::ReleaseLocks { .. }
            )
        })
        .count();
    if scheduled > limits.max_actions_per_turn {
        return Err(Failure::new(
            FailureKind::LimitExceeded,
            format!(
                "one turn scheduled {scheduled} tasks, above the limit of {} (max_actions_per_turn); fan out in batches (await each batch) or through sub-orchestrations",
                limits.max_actions_per_turn
            ),
        ));
    }
    // What each payload is called is only written out for the one over the limit.
    let actions = turn.actions.iter().filter_map(|action| match action {
        Action::ScheduleActivity { name, input, .. } => Some((input, "activity", name)),
        Action::StartSubOrchestration { name, input, .. } => {
            Some((input, "sub-orchestration", name))
        }
        Action::CallEntity {
            operation, input, ..
        }
        | Action::SignalEntity {
            operation, input, ..
        } => Some((input, "entity operation", operation)),
        _ => None,
    });
    for (input, kind, name) in actions {
        limits
            .check_payload(input.len(), || format!("input of {kind} `{name}`"))
            .map_err(PayloadTooLarge::into_failure)?;
    }
    let ending = turn.outcome.iter().filter_map(|outcome| match outcome {
        Outcome::Completed(output) => Some((output, "orchestration's output")),
        Outcome::ContinuedAsNew(input) => Some((input, "input given to continue_as_new")),
        Outcome::Failed(_) | Outcome::Terminated(_) => None,
    });
    let status = custom_status.map(|status| (status, "custom status"));
    for (payload, what) in ending.chain(status) {
        limits
            .check_payload(payload.len(), || what.to_owned())
            .map_err(PayloadTooLarge::into_failure)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_types::TaskId;

    const LIMITS: Limits = Limits {
        max_payload_bytes: 8,
        max_actions_per_turn: 2,
        history_warning_events: 10,
        max_instance_id_len: 10,
    };

    fn activity(id: u64, input: &str) -> Action {
        Action::ScheduleActivity {
            id: TaskId(id),
            name: "work".into(),
            input: Json::parse(input).unwrap(),
            retry: None,
        }
    }

    #[test]
    fn a_turn_within_limits_passes() {
        let turn = Turn {
            actions: vec![activity(0, "\"123456\""), activity(1, "1")],
            outcome: Some(Outcome::Completed(Json::parse("[1,2,3]").unwrap())),
            ..Turn::default()
        };
        assert!(check_turn(&turn, None, &LIMITS).is_ok());
    }

    #[test]
    fn too_many_actions_fail_but_cancellations_do_not_count() {
        let mut turn = Turn {
            actions: vec![activity(0, "1"), activity(1, "1"), activity(2, "1")],
            ..Turn::default()
        };
        let failure = check_turn(&turn, None, &LIMITS).unwrap_err();
        assert_eq!(failure.kind, FailureKind::LimitExceeded);
        assert!(failure.message.contains("3 tasks"), "{failure}");
        turn.actions.pop();
        turn.actions.push(Action::CancelTimer {
            id: TaskId(9),
            fire_at: durable_types::Timestamp::EPOCH,
        });
        assert!(check_turn(&turn, None, &LIMITS).is_ok());
    }

    #[test]
    fn each_kind_of_payload_is_measured() {
        let big = Json::parse("\"1234567\"").unwrap(); // 9 bytes
        let with_output = Turn {
            outcome: Some(Outcome::Completed(big.clone())),
            ..Turn::default()
        };
        let failure = check_turn(&with_output, None, &LIMITS).unwrap_err();
        assert!(failure.message.contains("output is 9 bytes"), "{failure}");
        let with_input = Turn {
            actions: vec![activity(0, "\"1234567\"")],
            ..Turn::default()
        };
        let failure = check_turn(&with_input, None, &LIMITS).unwrap_err();
        assert!(failure.message.contains("activity `work`"), "{failure}");
        let failure = check_turn(&Turn::default(), Some(&big), &LIMITS).unwrap_err();
        assert!(failure.message.contains("custom status"), "{failure}");
        let continued = Turn {
            outcome: Some(Outcome::ContinuedAsNew(big)),
            ..Turn::default()
        };
        let failure = check_turn(&continued, None, &LIMITS).unwrap_err();
        assert!(failure.message.contains("continue_as_new"), "{failure}");
    }
}
