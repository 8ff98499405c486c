//! Limits on what one turn may produce: the size of every payload it sends and the number
//! of actions it schedules. A turn over a limit is not committed; its execution fails with
//! [`FailureKind::LimitExceeded`] and a message that says what to do instead.

use super::{Action, Outcome, Turn};
use durable_store::{Failure, FailureKind, Json};

/// The bounds a turn is held to.
#[derive(Clone, Copy, Debug)]
pub struct TurnLimits {
    /// The largest JSON payload, in bytes.
    pub max_payload_bytes: usize,
    /// The most actions in one turn.
    pub max_actions: usize,
}

/// `Ok` when `turn` (with the execution's `custom_status`) is within `limits`, else the
/// failure to end its execution with.
pub fn check_turn(
    turn: &Turn,
    custom_status: Option<&Json>,
    limits: TurnLimits,
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
    if scheduled > limits.max_actions {
        return Err(Failure::new(
            FailureKind::LimitExceeded,
            format!(
                "one turn scheduled {scheduled} tasks, above the limit of {} (max_actions_per_turn); fan out in batches (await each batch) or through sub-orchestrations",
                limits.max_actions
            ),
        ));
    }
    let payloads = turn
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::ScheduleActivity { name, input, .. } => {
                Some((input, format!("input of activity `{name}`")))
            }
            Action::StartSubOrchestration { name, input, .. } => {
                Some((input, format!("input of sub-orchestration `{name}`")))
            }
            Action::CallEntity {
                operation, input, ..
            }
            | Action::SignalEntity {
                operation, input, ..
            } => Some((input, format!("input of entity operation `{operation}`"))),
            _ => None,
        })
        .chain(turn.outcome.iter().filter_map(|outcome| match outcome {
            Outcome::Completed(output) => Some((output, "orchestration's output".to_owned())),
            Outcome::ContinuedAsNew(input) => {
                Some((input, "input given to continue_as_new".to_owned()))
            }
            Outcome::Failed(_) | Outcome::Terminated(_) => None,
        }))
        .chain(custom_status.map(|status| (status, "custom status".to_owned())));
    for (payload, what) in payloads {
        let bytes = payload.as_str().len();
        if bytes > limits.max_payload_bytes {
            return Err(Failure::new(
                FailureKind::LimitExceeded,
                format!(
                    "the {what} is {bytes} bytes, above the limit of {} bytes (max_payload_bytes); keep large data elsewhere and pass a reference to it",
                    limits.max_payload_bytes
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_store::TaskId;

    const LIMITS: TurnLimits = TurnLimits {
        max_payload_bytes: 8,
        max_actions: 2,
    };

    fn activity(id: u64, input: &str) -> Action {
        Action::ScheduleActivity {
            id: TaskId(id),
            name: "work".into(),
            input: Json::parse(input).unwrap(),
        }
    }

    #[test]
    fn a_turn_within_limits_passes() {
        let turn = Turn {
            actions: vec![activity(0, "\"123456\""), activity(1, "1")],
            outcome: Some(Outcome::Completed(Json::parse("[1,2,3]").unwrap())),
            ..Turn::default()
        };
        assert!(check_turn(&turn, None, LIMITS).is_ok());
    }

    #[test]
    fn too_many_actions_fail_but_cancellations_do_not_count() {
        let mut turn = Turn {
            actions: vec![activity(0, "1"), activity(1, "1"), activity(2, "1")],
            ..Turn::default()
        };
        let failure = check_turn(&turn, None, LIMITS).unwrap_err();
        assert_eq!(failure.kind, FailureKind::LimitExceeded);
        assert!(failure.message.contains("3 tasks"), "{failure}");
        turn.actions.pop();
        turn.actions.push(Action::CancelTimer {
            id: TaskId(9),
            fire_at: durable_store::Timestamp::EPOCH,
        });
        assert!(check_turn(&turn, None, LIMITS).is_ok());
    }

    #[test]
    fn each_kind_of_payload_is_measured() {
        let big = Json::parse("\"1234567\"").unwrap(); // 9 bytes
        let with_output = Turn {
            outcome: Some(Outcome::Completed(big.clone())),
            ..Turn::default()
        };
        let failure = check_turn(&with_output, None, LIMITS).unwrap_err();
        assert!(failure.message.contains("output is 9 bytes"), "{failure}");
        let with_input = Turn {
            actions: vec![activity(0, "\"1234567\"")],
            ..Turn::default()
        };
        let failure = check_turn(&with_input, None, LIMITS).unwrap_err();
        assert!(failure.message.contains("activity `work`"), "{failure}");
        let failure = check_turn(&Turn::default(), Some(&big), LIMITS).unwrap_err();
        assert!(failure.message.contains("custom status"), "{failure}");
        let continued = Turn {
            outcome: Some(Outcome::ContinuedAsNew(big)),
            ..Turn::default()
        };
        let failure = check_turn(&continued, None, LIMITS).unwrap_err();
        assert!(failure.message.contains("continue_as_new"), "{failure}");
    }
}
