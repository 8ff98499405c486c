//! Deterministic tests of the engine: a history and new events in, the turn out. No
//! runtime, no store, no threads.

#![allow(clippy::unwrap_used)]

use crate::{
    Action, Activity, ActivityContext, BoxFuture, Engine, Error, ErrorKind, LocalBoxFuture,
    OrchestrationContext, Orchestrator, Outcome, Outstanding, RetryPolicy, Turn,
};
use durable_types::{
    ExecutionId, Failure, FailureKind, HistoryEvent, InstanceId, Json, TaskId, Timestamp,
};
use std::time::Duration;

#[derive(Clone, Copy)]
struct AddOne;
impl Activity for AddOne {
    type Input = u64;
    type Output = u64;
    const NAME: &'static str = "add_one";
    fn run(_ctx: ActivityContext, x: u64) -> BoxFuture<'static, Result<u64, Error>> {
        Box::pin(async move { Ok(x + 1) })
    }
}

#[derive(Clone, Copy)]
struct Other;
impl Activity for Other {
    type Input = u64;
    type Output = u64;
    const NAME: &'static str = "other";
    fn run(_ctx: ActivityContext, x: u64) -> BoxFuture<'static, Result<u64, Error>> {
        Box::pin(async move { Ok(x) })
    }
}

macro_rules! orchestrator {
    ($name:ident, $input:ty, $output:ty, |$ctx:ident, $x:ident| $body:expr) => {
        #[derive(Clone, Copy)]
        struct $name;
        impl Orchestrator for $name {
            type Input = $input;
            type Output = $output;
            const NAME: &'static str = stringify!($name);
            fn run(
                $ctx: OrchestrationContext,
                $x: $input,
            ) -> LocalBoxFuture<'static, Result<$output, Error>> {
                Box::pin(async move { $body })
            }
        }
    };
}

orchestrator!(Chain, u64, u64, |ctx, x| {
    let a = ctx.call_activity(AddOne, x).await?;
    ctx.call_activity(AddOne, a).await
});

orchestrator!(ChainOther, u64, u64, |ctx, x| {
    let a = ctx.call_activity(Other, x).await?;
    ctx.call_activity(AddOne, a).await
});

orchestrator!(Fan, u64, u64, |ctx, n| {
    let tasks: Vec<_> = (0..n).map(|i| ctx.call_activity(AddOne, i)).collect();
    Ok(ctx.join_all(tasks).await?.into_iter().sum())
});

orchestrator!(Compensate, u64, String, |ctx, x| {
    match ctx.call_activity(AddOne, x).await {
        Ok(_) => Ok("no failure".to_owned()),
        Err(error) => {
            let undo = ctx.call_activity(Other, x).await?;
            Ok(format!("compensated {undo} after: {error}"))
        }
    }
});

orchestrator!(Panics, u64, u64, |ctx, x| {
    let a = ctx.call_activity(AddOne, x).await?;
    if a > 1 {
        panic!("boom at {a}");
    }
    Ok(a)
});

orchestrator!(Forever, u64, u64, |ctx, n| {
    if n == 0 {
        return Ok(0);
    }
    ctx.sleep(Duration::from_secs(1)).await?;
    ctx.continue_as_new(Forever, n - 1).await
});

orchestrator!(Retrying, u64, u64, |ctx, x| {
    ctx.call_activity_with_retry(AddOne, x, RetryPolicy::new(3, Duration::from_secs(2)))
        .await
});

fn engine<O: Orchestrator>() -> Engine {
    Engine::new(id(), ExecutionId::FIRST, crate::run_orchestrator::<O>)
}

fn id() -> InstanceId {
    InstanceId::new("test-instance").unwrap()
}

fn json<T: serde::Serialize>(value: T) -> Json {
    Json::encode(&value).unwrap()
}

fn started<T: serde::Serialize>(name: &str, input: T) -> HistoryEvent {
    HistoryEvent::ExecutionStarted {
        name: name.to_owned(),
        input: json(input),
        parent: None,
        generation: 1,
    }
}

fn at(ms: u64) -> HistoryEvent {
    HistoryEvent::OrchestratorStarted { at: Timestamp(ms) }
}

fn scheduled(task: u64, name: &str, input: u64) -> HistoryEvent {
    HistoryEvent::TaskScheduled {
        id: TaskId(task),
        name: name.to_owned(),
        input: json(input),
        retry: None,
    }
}

fn completed(task: u64, output: u64) -> HistoryEvent {
    HistoryEvent::TaskCompleted {
        id: TaskId(task),
        output: json(output),
    }
}

fn failed(task: u64, message: &str) -> HistoryEvent {
    HistoryEvent::TaskFailed {
        id: TaskId(task),
        failure: Failure::new(FailureKind::Application, message),
    }
}

/// Runs turns live, returning the whole history.
fn run_live(engine: &mut Engine, turns: Vec<Vec<HistoryEvent>>) -> (Vec<HistoryEvent>, Turn) {
    let mut history = Vec::new();
    let mut last = Turn::default();
    for (index, inputs) in turns.into_iter().enumerate() {
        last = engine.run_turn(Timestamp(1000 * (index as u64 + 1)), inputs);
        history.extend(last.events.iter().cloned());
    }
    (history, last)
}

#[test]
fn chain_runs_turn_by_turn() {
    let mut engine = engine::<Chain>();
    let first = engine.run_turn(Timestamp(1000), vec![started("Chain", 1)]);
    assert_eq!(
        first.events,
        vec![at(1000), started("Chain", 1), scheduled(0, "add_one", 1)]
    );
    assert_eq!(
        first.actions,
        vec![Action::ScheduleActivity {
            id: TaskId(0),
            name: "add_one".into(),
            input: json(1),
            retry: None,
        }]
    );
    assert_eq!(first.outcome, None);

    let second = engine.run_turn(Timestamp(2000), vec![completed(0, 2)]);
    assert_eq!(
        second.events,
        vec![at(2000), completed(0, 2), scheduled(1, "add_one", 2)]
    );

    let third = engine.run_turn(Timestamp(3000), vec![completed(1, 3)]);
    assert_eq!(third.outcome, Some(Outcome::Completed(json(3))));
    assert_eq!(
        third.events,
        vec![
            at(3000),
            completed(1, 3),
            HistoryEvent::ExecutionCompleted { output: json(3) }
        ]
    );
    assert!(third.actions.is_empty());
}

#[test]
fn replay_resumes_where_the_live_run_stopped() {
    let mut live = engine::<Chain>();
    let (history, _) = run_live(
        &mut live,
        vec![vec![started("Chain", 1)], vec![completed(0, 2)]],
    );

    let mut replayed = engine::<Chain>();
    replayed.replay(&history).unwrap();
    // Replay produced nothing new: a turn without inputs records nothing.
    let idle = replayed.run_turn(Timestamp(5000), vec![]);
    assert!(idle.events.is_empty());
    assert!(idle.actions.is_empty());

    let last = replayed.run_turn(Timestamp(6000), vec![completed(1, 3)]);
    assert_eq!(last.outcome, Some(Outcome::Completed(json(3))));
}

#[test]
fn replaying_every_prefix_of_a_history_emits_nothing() {
    let mut live = engine::<Fan>();
    let mut turns = vec![vec![started("Fan", 5)]];
    turns.extend((0..5).map(|i| vec![completed(i, i + 1)]));
    let (history, last) = run_live(&mut live, turns);
    assert_eq!(last.outcome, Some(Outcome::Completed(json(15))));
    // Every turn boundary is a valid replay point.
    for end in 1..history.len() {
        if matches!(history[end], HistoryEvent::OrchestratorStarted { .. }) {
            let mut replayed = engine::<Fan>();
            replayed.replay(&history[..end]).unwrap();
            assert!(replayed.outcome().is_none());
        }
    }
}

#[test]
fn is_replaying_is_true_only_during_replay() {
    orchestrator!(Probe, u64, Vec<bool>, |ctx, x| {
        let before = ctx.is_replaying();
        ctx.call_activity(AddOne, x).await?;
        Ok(vec![before, ctx.is_replaying()])
    });
    let mut live = engine::<Probe>();
    let (history, _) = run_live(&mut live, vec![vec![started("Probe", 1)]]);
    let mut replayed = engine::<Probe>();
    replayed.replay(&history).unwrap();
    let turn = replayed.run_turn(Timestamp(9), vec![completed(0, 2)]);
    assert_eq!(
        turn.outcome,
        Some(Outcome::Completed(json(vec![true, false])))
    );
}

#[test]
fn changed_code_is_nondeterminism_naming_both_activities() {
    let mut live = engine::<Chain>();
    let (history, _) = run_live(
        &mut live,
        vec![vec![started("Chain", 1)], vec![completed(0, 2)]],
    );
    // The same history replayed by code that calls `other` first.
    let mut changed = engine::<ChainOther>();
    let failure = changed.replay(&history).unwrap_err();
    assert_eq!(failure.kind, FailureKind::NonDeterminism);
    assert!(failure.message.contains("`add_one`"), "{}", failure.message);
    assert!(failure.message.contains("`other`"), "{}", failure.message);
}

#[test]
fn code_that_schedules_less_than_history_is_nondeterminism() {
    orchestrator!(Nothing, u64, u64, |_ctx, x| Ok(x));
    let history = vec![at(1), started("Nothing", 1), scheduled(0, "add_one", 1)];
    let failure = engine::<Nothing>().replay(&history).unwrap_err();
    assert_eq!(failure.kind, FailureKind::NonDeterminism);
}

#[test]
fn code_that_schedules_more_than_history_is_nondeterminism() {
    let history = vec![at(1), started("Chain", 1)];
    let failure = engine::<Chain>().replay(&history).unwrap_err();
    assert_eq!(failure.kind, FailureKind::NonDeterminism);
    assert!(
        failure.message.contains("history does not record"),
        "{}",
        failure.message
    );
}

#[test]
fn duplicate_and_unknown_completions_are_discarded() {
    let mut engine = engine::<Chain>();
    engine.run_turn(Timestamp(1), vec![started("Chain", 1)]);
    let turn = engine.run_turn(
        Timestamp(2),
        vec![
            completed(0, 2),
            completed(0, 2),
            completed(7, 0),
            HistoryEvent::TimerFired { id: TaskId(1) },
        ],
    );
    assert_eq!(
        turn.events,
        vec![at(2), completed(0, 2), scheduled(1, "add_one", 2)]
    );
    let reasons: Vec<&str> = turn.discarded.iter().map(|(_, why)| *why).collect();
    assert_eq!(
        reasons,
        vec![
            "the task already completed",
            "no such task",
            "the task is of another kind"
        ]
    );
}

#[test]
fn fan_out_of_a_thousand_in_two_turns() {
    let mut engine = engine::<Fan>();
    let first = engine.run_turn(Timestamp(1), vec![started("Fan", 1000)]);
    assert_eq!(first.actions.len(), 1000);
    // Results arrive in reverse order; the output is still in call order (summed here).
    let inputs = (0..1000).rev().map(|i| completed(i, i + 1)).collect();
    let second = engine.run_turn(Timestamp(2), inputs);
    assert_eq!(second.outcome, Some(Outcome::Completed(json(500_500))));
}

#[test]
fn activity_failure_reaches_the_orchestrator_with_the_name_and_message() {
    let mut engine = engine::<Compensate>();
    engine.run_turn(Timestamp(1), vec![started("Compensate", 5)]);
    let turn = engine.run_turn(Timestamp(2), vec![failed(0, "card declined")]);
    assert_eq!(turn.actions.len(), 1, "the compensation is scheduled");
    let done = engine.run_turn(Timestamp(3), vec![completed(1, 5)]);
    assert_eq!(
        done.outcome,
        Some(Outcome::Completed(json(
            "compensated 5 after: activity `add_one` failed: card declined"
        )))
    );
}

#[test]
fn unhandled_failure_fails_the_execution_with_its_cause() {
    let mut engine = engine::<Chain>();
    engine.run_turn(Timestamp(1), vec![started("Chain", 1)]);
    let turn = engine.run_turn(Timestamp(2), vec![failed(0, "disk full")]);
    let Some(Outcome::Failed(failure)) = turn.outcome else {
        panic!("not failed: {:?}", turn.outcome)
    };
    assert_eq!(failure.kind, ErrorKind::ActivityFailed);
    assert_eq!(failure.to_string(), "activity `add_one` failed: disk full");
}

#[test]
fn a_panic_fails_the_execution_with_the_message() {
    let mut engine = engine::<Panics>();
    engine.run_turn(Timestamp(1), vec![started("Panics", 1)]);
    let turn = engine.run_turn(Timestamp(2), vec![completed(0, 2)]);
    let Some(Outcome::Failed(failure)) = turn.outcome else {
        panic!("not failed: {:?}", turn.outcome)
    };
    assert_eq!(failure.kind, FailureKind::Panic);
    assert!(failure.message.contains("boom at 2"), "{}", failure.message);
    // The engine is finished; further inputs are discarded.
    let after = engine.run_turn(Timestamp(3), vec![completed(0, 2)]);
    assert!(after.events.is_empty());
    assert_eq!(after.discarded.len(), 1);
}

#[test]
fn continue_as_new_ends_the_execution_with_the_next_input() {
    let mut engine = engine::<Forever>();
    let first = engine.run_turn(Timestamp(1000), vec![started("Forever", 3)]);
    assert_eq!(
        first.actions,
        vec![Action::CreateTimer {
            id: TaskId(0),
            fire_at: Timestamp(2000)
        }]
    );
    let second = engine.run_turn(
        Timestamp(2000),
        vec![HistoryEvent::TimerFired { id: TaskId(0) }],
    );
    assert_eq!(second.outcome, Some(Outcome::ContinuedAsNew(json(2))));
    assert_eq!(
        second.events.last(),
        Some(&HistoryEvent::ContinuedAsNew { input: json(2) })
    );
}

#[test]
fn terminate_ends_the_execution_and_reports_outstanding_work() {
    let mut engine = engine::<Fan>();
    engine.run_turn(Timestamp(1), vec![started("Fan", 3)]);
    engine.run_turn(Timestamp(2), vec![completed(1, 2)]);
    assert_eq!(
        engine.outstanding(),
        vec![
            Outstanding::Activity(TaskId(0)),
            Outstanding::Activity(TaskId(2))
        ]
    );
    let turn = engine.run_turn(
        Timestamp(3),
        vec![HistoryEvent::ExecutionTerminated {
            reason: "stop".into(),
        }],
    );
    assert_eq!(turn.outcome, Some(Outcome::Terminated("stop".into())));
    assert_eq!(
        turn.events,
        vec![
            at(3),
            HistoryEvent::ExecutionTerminated {
                reason: "stop".into()
            }
        ]
    );
}

#[test]
fn retry_waits_on_durable_timers_between_attempts() {
    let mut engine = engine::<Retrying>();
    engine.run_turn(Timestamp(10_000), vec![started("Retrying", 1)]);
    let after_first = engine.run_turn(Timestamp(11_000), vec![failed(0, "flaky")]);
    assert_eq!(
        after_first.actions,
        vec![Action::CreateTimer {
            id: TaskId(1),
            fire_at: Timestamp(13_000)
        }]
    );
    let second_attempt = engine.run_turn(
        Timestamp(13_000),
        vec![HistoryEvent::TimerFired { id: TaskId(1) }],
    );
    assert!(matches!(
        second_attempt.actions[..],
        [Action::ScheduleActivity { id: TaskId(2), .. }]
    ));
    let after_second = engine.run_turn(Timestamp(14_000), vec![failed(2, "flaky")]);
    assert_eq!(
        after_second.actions,
        vec![Action::CreateTimer {
            id: TaskId(3),
            fire_at: Timestamp(18_000)
        }],
        "the delay doubles"
    );
    engine.run_turn(
        Timestamp(18_000),
        vec![HistoryEvent::TimerFired { id: TaskId(3) }],
    );
    let done = engine.run_turn(Timestamp(19_000), vec![completed(4, 2)]);
    assert_eq!(done.outcome, Some(Outcome::Completed(json(2))));
}

#[test]
fn current_time_and_guids_are_replay_safe() {
    orchestrator!(Clock, u64, (u64, String, String), |ctx, x| {
        let first = ctx.new_guid().to_string();
        ctx.call_activity(AddOne, x).await?;
        let now = ctx
            .current_utc_datetime()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        Ok((now, first, ctx.new_guid().to_string()))
    });
    let mut live = engine::<Clock>();
    let (history, last) = run_live(
        &mut live,
        vec![vec![started("Clock", 1)], vec![completed(0, 2)]],
    );
    let Some(Outcome::Completed(output)) = last.outcome else {
        panic!()
    };
    let (now, a, b): (u64, String, String) = output.decode().unwrap();
    assert_eq!(now, 2000, "the time of the turn that resumed the code");
    assert_ne!(a, b);

    // Replaying to the same point gives the same time and the same ids.
    let mut replayed = engine::<Clock>();
    replayed.replay(&history[..history.len() - 3]).unwrap();
    let turn = replayed.run_turn(Timestamp(2000), vec![completed(0, 2)]);
    assert_eq!(turn.outcome, Some(Outcome::Completed(output)));
}

#[test]
fn wrong_input_type_fails_with_a_serialization_error() {
    let mut engine = engine::<Chain>();
    let turn = engine.run_turn(Timestamp(1), vec![started("Chain", "not a number")]);
    let Some(Outcome::Failed(failure)) = turn.outcome else {
        panic!()
    };
    assert_eq!(failure.kind, FailureKind::Serialization);
    assert!(
        failure.message.contains("input of orchestrator `Chain`"),
        "{}",
        failure.message
    );
}

#[test]
fn sub_orchestration_ids_derive_from_the_parent() {
    orchestrator!(Parent, u64, u64, |ctx, x| {
        ctx.call_sub_orchestrator(Chain, x).await
    });
    let mut engine = engine::<Parent>();
    let turn = engine.run_turn(Timestamp(1), vec![started("Parent", 1)]);
    let [Action::StartSubOrchestration { instance, name, .. }] = &turn.actions[..] else {
        panic!("{:?}", turn.actions)
    };
    assert_eq!(instance.as_str(), "test-instance:1:0");
    assert_eq!(name, "Chain");
    let done = engine.run_turn(
        Timestamp(2),
        vec![HistoryEvent::SubOrchestrationCompleted {
            id: TaskId(0),
            output: json(3),
        }],
    );
    assert_eq!(done.outcome, Some(Outcome::Completed(json(3))));
}

#[test]
fn terminate_takes_precedence_over_other_inputs() {
    orchestrator!(Spin, u64, u64, |ctx, n| ctx
        .continue_as_new(Spin, n + 1)
        .await);
    let mut engine = engine::<Spin>();
    let stop = HistoryEvent::ExecutionTerminated {
        reason: "enough".into(),
    };
    // The start and the terminate arrive together: the code never runs.
    let turn = engine.run_turn(Timestamp(5), vec![started("Spin", 0), stop.clone()]);
    assert_eq!(turn.outcome, Some(Outcome::Terminated("enough".into())));
    assert_eq!(turn.events, vec![at(5), started("Spin", 0), stop]);
    assert!(turn.actions.is_empty());
}

#[test]
fn inputs_after_the_end_are_reported_unprocessed() {
    let mut engine = engine::<Forever>();
    engine.run_turn(Timestamp(1000), vec![started("Forever", 3)]);
    let event = HistoryEvent::EventRaised {
        name: "late".into(),
        input: Json::null(),
    };
    let turn = engine.run_turn(
        Timestamp(2000),
        vec![HistoryEvent::TimerFired { id: TaskId(0) }, event.clone()],
    );
    assert_eq!(turn.outcome, Some(Outcome::ContinuedAsNew(json(2))));
    assert_eq!(turn.unprocessed, vec![event]);
}

fn raised<T: serde::Serialize>(name: &str, payload: T) -> HistoryEvent {
    HistoryEvent::EventRaised {
        name: name.to_owned(),
        input: json(payload),
    }
}

orchestrator!(ThreeEvents, (), Vec<u64>, |ctx, _x| {
    ctx.call_activity(AddOne, 0).await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(ctx.wait_for_event::<u64>("step").await?);
    }
    Ok(got)
});

#[test]
fn events_raised_before_the_wait_are_kept_in_order() {
    let mut engine = engine::<ThreeEvents>();
    engine.run_turn(Timestamp(1), vec![started("ThreeEvents", ())]);
    // All three arrive while the orchestrator still waits for its activity.
    let turn = engine.run_turn(
        Timestamp(2),
        vec![
            raised("step", 1),
            raised("other", 9),
            raised("step", 2),
            raised("step", 3),
        ],
    );
    assert_eq!(
        turn.events.len(),
        5,
        "every event is recorded: {:?}",
        turn.events
    );
    let done = engine.run_turn(Timestamp(3), vec![completed(0, 1)]);
    assert_eq!(done.outcome, Some(Outcome::Completed(json(vec![1, 2, 3]))));
}

#[test]
fn events_replay_to_the_same_values() {
    let mut live = engine::<ThreeEvents>();
    let (history, _) = run_live(
        &mut live,
        vec![
            vec![started("ThreeEvents", ())],
            vec![raised("step", 7)],
            vec![completed(0, 1), raised("step", 8)],
        ],
    );
    let mut replayed = engine::<ThreeEvents>();
    replayed.replay(&history).unwrap();
    let done = replayed.run_turn(Timestamp(9), vec![raised("step", 9)]);
    assert_eq!(done.outcome, Some(Outcome::Completed(json(vec![7, 8, 9]))));
}

orchestrator!(Approval, (), String, |ctx, _x| {
    let approval = ctx.wait_for_event::<bool>("approval");
    let timeout = ctx.sleep(Duration::from_secs(60));
    Ok(match ctx.select(approval, timeout).await {
        crate::Either::Left(answer) => format!("answer {}", answer?),
        crate::Either::Right(fired) => {
            fired?;
            "timeout".to_owned()
        }
    })
});

#[test]
fn select_cancels_the_losing_timer() {
    let mut engine = engine::<Approval>();
    let first = engine.run_turn(Timestamp(1000), vec![started("Approval", ())]);
    assert_eq!(
        first.actions,
        vec![Action::CreateTimer {
            id: TaskId(1),
            fire_at: Timestamp(61_000)
        }]
    );
    let second = engine.run_turn(Timestamp(2000), vec![raised("approval", true)]);
    assert_eq!(
        second.outcome,
        Some(Outcome::Completed(json("answer true")))
    );
    assert!(second.actions.contains(&Action::CancelTimer {
        id: TaskId(1),
        fire_at: Timestamp(61_000)
    }));
    assert!(
        second
            .events
            .contains(&HistoryEvent::TimerCancelled { id: TaskId(1) })
    );
}

#[test]
fn select_timeout_wins_and_a_late_event_is_not_lost_to_the_loser() {
    let mut engine = engine::<Approval>();
    engine.run_turn(Timestamp(1000), vec![started("Approval", ())]);
    let turn = engine.run_turn(
        Timestamp(61_000),
        vec![
            HistoryEvent::TimerFired { id: TaskId(1) },
            raised("approval", true),
        ],
    );
    assert_eq!(turn.outcome, Some(Outcome::Completed(json("timeout"))));
    // The event came after the execution ended in this turn: reported, not swallowed.
    assert_eq!(turn.unprocessed, vec![raised("approval", true)]);
}

orchestrator!(LateSelect, (), String, |ctx, _x| {
    // Both tasks complete while the code awaits something else: when the select is first
    // polled both are ready, and the left one wins, whatever the history order.
    let event = ctx.wait_for_event::<u64>("e");
    let timer = ctx.sleep(Duration::from_secs(1));
    ctx.call_activity(AddOne, 0).await?;
    Ok(match ctx.select(event, timer).await {
        crate::Either::Left(_) => "event".to_owned(),
        crate::Either::Right(_) => "timer".to_owned(),
    })
});

#[test]
fn select_of_tasks_ready_at_once_picks_the_left_on_replay_too() {
    for inputs in [
        vec![HistoryEvent::TimerFired { id: TaskId(1) }, raised("e", 1)],
        vec![raised("e", 1), HistoryEvent::TimerFired { id: TaskId(1) }],
    ] {
        let mut live = engine::<LateSelect>();
        let (history, _) = run_live(&mut live, vec![vec![started("LateSelect", ())], inputs]);
        let mut replayed = engine::<LateSelect>();
        replayed.replay(&history).unwrap();
        let from_replay = replayed.run_turn(Timestamp(9), vec![completed(2, 1)]);
        let from_live = live.run_turn(Timestamp(9), vec![completed(2, 1)]);
        assert_eq!(from_live.outcome, Some(Outcome::Completed(json("event"))));
        assert_eq!(from_replay.outcome, from_live.outcome);
        assert_eq!(from_replay.events, from_live.events);
    }
}

#[test]
fn a_cancelled_timer_replays_and_its_late_firing_is_discarded() {
    let mut live = engine::<Approval>();
    let (history, _) = run_live(&mut live, vec![vec![started("Approval", ())]]);
    let mut replayed = engine::<Approval>();
    replayed.replay(&history).unwrap();
    let answered = replayed.run_turn(Timestamp(5), vec![raised("approval", false)]);
    assert_eq!(
        answered.outcome,
        Some(Outcome::Completed(json("answer false")))
    );

    // The same history up to the cancellation, replayed, then the stale firing arrives.
    orchestrator!(Waits, (), u64, |ctx, _x| {
        let timer = ctx.sleep(Duration::from_secs(60));
        drop(timer);
        ctx.wait_for_event::<u64>("go").await
    });
    let mut waits = engine::<Waits>();
    let (history, _) = run_live(&mut waits, vec![vec![started("Waits", ())]]);
    assert!(history.contains(&HistoryEvent::TimerCancelled { id: TaskId(0) }));
    let mut replayed = engine::<Waits>();
    replayed.replay(&history).unwrap();
    let stale = replayed.run_turn(
        Timestamp(7),
        vec![HistoryEvent::TimerFired { id: TaskId(0) }],
    );
    assert!(
        stale.events.is_empty(),
        "nothing is recorded for a cancelled timer"
    );
    assert_eq!(stale.discarded.len(), 1);
    let done = replayed.run_turn(Timestamp(8), vec![raised("go", 3)]);
    assert_eq!(done.outcome, Some(Outcome::Completed(json(3))));
}

#[test]
fn suspension_events_are_recorded_without_running_code() {
    let mut engine = engine::<Chain>();
    engine.run_turn(Timestamp(1), vec![started("Chain", 1)]);
    let suspended = HistoryEvent::ExecutionSuspended { reason: "r".into() };
    let turn = engine.run_turn(Timestamp(2), vec![suspended.clone()]);
    assert_eq!(turn.events, vec![at(2), suspended]);
    assert!(turn.actions.is_empty());
}

fn entity(key: &str) -> durable_types::EntityId {
    durable_types::EntityId::new("Counter", key).unwrap()
}

orchestrator!(AbandonLock, u64, u64, |ctx, _x| {
    let request = ctx.lock_entities(&[entity("a")]);
    drop(request);
    ctx.wait_for_event::<u64>("go").await
});

orchestrator!(LockThenEnd, u64, u64, |ctx, _x| {
    let _lock = ctx.lock_entities(&[entity("b"), entity("a")]).await?;
    ctx.wait_for_event::<u64>("go").await
});

fn granted(task: u64, keys: &[&str]) -> HistoryEvent {
    HistoryEvent::LocksGranted {
        id: TaskId(task),
        entities: keys.iter().map(|key| entity(key)).collect(),
    }
}

#[test]
fn a_grant_for_a_dropped_lock_request_is_released_at_once_and_replays() {
    let mut live = engine::<AbandonLock>();
    let (mut history, _) = run_live(&mut live, vec![vec![started("AbandonLock", 0)]]);
    let turn = live.run_turn(Timestamp(2000), vec![granted(0, &["a"])]);
    assert!(
        turn.actions
            .iter()
            .any(|action| matches!(action, Action::ReleaseLocks { id: TaskId(0), .. })),
        "{:?}",
        turn.actions
    );
    history.extend(turn.events.iter().cloned());
    let mut replayed = engine::<AbandonLock>();
    replayed.replay(&history).unwrap();
    assert!(
        replayed.outstanding().is_empty(),
        "{:?}",
        replayed.outstanding()
    );
}

#[test]
fn an_ending_execution_releases_every_lock_it_requested_granted_or_not() {
    // Terminated while the request is still travelling: the request is released too.
    let mut first = engine::<LockThenEnd>();
    run_live(&mut first, vec![vec![started("LockThenEnd", 0)]]);
    let turn = first.run_turn(
        Timestamp(2000),
        vec![HistoryEvent::ExecutionTerminated {
            reason: "stop".into(),
        }],
    );
    assert!(turn.outcome.is_some());
    assert_eq!(
        first.outstanding(),
        vec![Outstanding::Locks(
            TaskId(0),
            vec![entity("a"), entity("b")]
        )]
    );

    // The grant and the end in one turn: the grant is not applied, the locks still go.
    let mut second = engine::<LockThenEnd>();
    run_live(&mut second, vec![vec![started("LockThenEnd", 0)]]);
    second.run_turn(
        Timestamp(2000),
        vec![
            HistoryEvent::ExecutionTerminated {
                reason: "stop".into(),
            },
            granted(0, &["a", "b"]),
        ],
    );
    assert_eq!(
        second.outstanding(),
        vec![Outstanding::Locks(
            TaskId(0),
            vec![entity("a"), entity("b")]
        )]
    );
}

#[test]
fn a_failed_lock_request_releases_what_it_took_before_the_code_continues() {
    let mut live = engine::<LockThenEnd>();
    run_live(&mut live, vec![vec![started("LockThenEnd", 0)]]);
    let turn = live.run_turn(
        Timestamp(2000),
        vec![HistoryEvent::EntityFailed {
            id: TaskId(0),
            failure: Failure::new(FailureKind::NotRegistered, "not registered"),
        }],
    );
    assert!(matches!(turn.outcome, Some(Outcome::Failed(_))));
    assert!(
        turn.actions
            .iter()
            .any(|action| matches!(action, Action::ReleaseLocks { id: TaskId(0), .. })),
        "{:?}",
        turn.actions
    );
    assert!(live.outstanding().is_empty(), "{:?}", live.outstanding());
}

mod agreement;
