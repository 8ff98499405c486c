//! The engine (which knows the code) and the ledger (which knows only the history) must
//! agree: on what an execution leaves outstanding after every turn and after replaying any
//! prefix of its history, and on the events a turn appends when the ledger is handed the
//! actions the code produced. Orchestrations of every kind of task are driven to their end
//! by a seeded schedule that answers their actions in random order, a few at a time, with
//! duplicates, stale results, external events and the odd terminate mixed in.

use super::*;
use crate::{Ledger, Outstanding};
use durable_types::EntityId;

/// A small deterministic generator (xorshift64*), so any failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn account(key: &str) -> EntityId {
    EntityId::new("Account", key).unwrap()
}

orchestrator!(Child, u64, u64, |ctx, x| ctx.call_activity(AddOne, x).await);

// Every kind of task: activities in sequence and fanned out, a timer raced against an
// event, activities raced against timers, a sub-orchestration, entity calls and signals, a critical section, a retry.
orchestrator!(Everything, u64, u64, |ctx, x| {
    let a = ctx.call_activity(AddOne, x).await?;
    let fan: Vec<_> = (0..3).map(|i| ctx.call_activity(AddOne, a + i)).collect();
    let sum: u64 = ctx.join_all(fan).await?.into_iter().sum();
    let timeout = ctx.sleep(Duration::from_secs(60));
    let approval = ctx.wait_for_event::<u64>("go");
    let waited = match ctx.select(timeout, approval).await {
        crate::Either::Left(_) => 0,
        crate::Either::Right(value) => value.unwrap_or(0),
    };
    // Activities that may lose a race and be cancelled, their results still coming.
    let raced = ctx.select(
        ctx.call_activity(AddOne, 1),
        ctx.sleep(Duration::from_secs(5)),
    );
    let raced = match raced.await {
        crate::Either::Left(value) => value.unwrap_or(0),
        crate::Either::Right(_) => 0,
    };
    let timed = ctx
        .timeout(Duration::from_secs(5), ctx.call_activity(AddOne, 2))
        .await
        .unwrap_or(0);
    let child = ctx
        .call_sub_orchestrator(Child, sum + raced + timed)
        .await?;
    ctx.signal_entity(&account("audit"), "note", json(child));
    let balance: u64 = ctx
        .call_entity(&account("a"), "balance", Json::null())
        .await?;
    {
        let _locks = ctx.lock_entities(&[account("a"), account("b")]).await?;
        let _: u64 = ctx.call_entity(&account("b"), "deposit", json(1)).await?;
    }
    let retried = ctx
        .call_activity_with_retry(AddOne, balance, RetryPolicy::new(2, Duration::from_secs(1)))
        .await?;
    Ok(sum + waited + child + retried)
});

// Work left behind on purpose: a timer and an activity never awaited, a lock held to the
// end, a sub-orchestration not awaited.
orchestrator!(LeavesWork, u64, u64, |ctx, x| {
    let _forgotten = ctx.sleep(Duration::from_secs(3600));
    let _ignored = ctx.call_activity(AddOne, x);
    let _child = ctx.call_sub_orchestrator(Child, x);
    let _locks = ctx.lock_entities(&[account("held")]).await?;
    ctx.wait_for_event::<u64>("never").await
});

/// The completion the outside world sends for an action, if it sends one.
fn answer(action: &Action, rng: &mut Rng) -> Option<HistoryEvent> {
    Some(match action {
        Action::ScheduleActivity { id, .. } if rng.chance(15) => HistoryEvent::TaskFailed {
            id: *id,
            failure: Failure::new(FailureKind::Application, "flaky"),
        },
        Action::ScheduleActivity { id, .. } => HistoryEvent::TaskCompleted {
            id: *id,
            output: json(rng.below(10)),
        },
        Action::CreateTimer { id, .. } => HistoryEvent::TimerFired { id: *id },
        Action::StartSubOrchestration { id, .. } => HistoryEvent::SubOrchestrationCompleted {
            id: *id,
            output: json(7),
        },
        Action::CallEntity { id, .. } => HistoryEvent::EntityCompleted {
            id: *id,
            output: json(5),
        },
        Action::AcquireLocks { id, entities } => HistoryEvent::LocksGranted {
            id: *id,
            entities: entities.clone(),
        },
        Action::CancelTimer { .. }
        | Action::CancelActivity { .. }
        | Action::SignalEntity { .. }
        | Action::ReleaseLocks { .. } => {
            return None;
        }
    })
}

/// Events in a canonical order, to compare two turns that may order them differently.
fn sorted(events: &[HistoryEvent]) -> Vec<String> {
    let mut events: Vec<String> = events.iter().map(|event| format!("{event:?}")).collect();
    events.sort();
    events
}

/// Drives one orchestration to its end under `seed`, checking at every turn that:
/// the engine's outstanding work is the ledger's (of the history so far, built both
/// incrementally and from scratch); a fresh engine replaying the history agrees too; and
/// the ledger, given the turn's inputs and the code's actions, appends the same events.
fn drive<O: Orchestrator>(name: &str, input: u64, seed: u64) -> (Vec<HistoryEvent>, usize) {
    let mut rng = Rng(seed | 1);
    let mut live = engine::<O>();
    let mut ledger = Ledger::new();
    let mut history: Vec<HistoryEvent> = Vec::new();
    let mut waiting: Vec<HistoryEvent> = vec![started(name, input)];
    let mut delivered: Vec<HistoryEvent> = Vec::new();
    let mut compared = 0;
    for round in 0..200u64 {
        let mut inputs = Vec::new();
        let take = 1 + rng.below(3) as usize;
        for _ in 0..take.min(waiting.len()) {
            let at = rng.below(waiting.len() as u64) as usize;
            inputs.push(waiting.swap_remove(at));
        }
        if rng.chance(10) && !delivered.is_empty() {
            // A duplicate of something already delivered: it must be discarded.
            inputs.push(delivered[rng.below(delivered.len() as u64) as usize].clone());
        }
        if rng.chance(10) {
            inputs.push(raised("go", rng.below(5)));
        }
        if round > 3 && rng.chance(3) {
            inputs.push(HistoryEvent::ExecutionTerminated {
                reason: "stop".into(),
            });
        }
        let now = Timestamp(1_000 * (round + 1));
        let turn = live.run_turn(now, inputs.clone());
        delivered.extend(inputs.iter().cloned());
        waiting.extend(
            turn.actions
                .iter()
                .filter_map(|action| answer(action, &mut rng)),
        );
        history.extend(turn.events.iter().cloned());

        let expected = live.outstanding();
        let mut mirrored = ledger.clone();
        let ledger_turn = mirrored.turn(
            now,
            inputs.clone(),
            turn.actions.clone(),
            turn.outcome.clone(),
        );
        let comparable = turn.discarded.is_empty() && turn.unprocessed.is_empty();
        if comparable && ledger_turn.discarded.is_empty() {
            compared += 1;
            assert_eq!(
                sorted(&ledger_turn.events),
                sorted(&turn.events),
                "seed {seed}, round {round}: the ledger's turn appends other events"
            );
        }
        for event in &turn.events {
            ledger.record(event);
        }
        assert_eq!(
            ledger.outstanding(),
            expected,
            "seed {seed}, round {round}: outstanding work differs (engine vs ledger)"
        );
        assert_eq!(
            Ledger::from_history(&history).outstanding(),
            expected,
            "seed {seed}, round {round}"
        );
        if turn.outcome.is_some() {
            assert!(ledger.has_ended());
            return (history, compared);
        }
        let mut replayed = engine::<O>();
        replayed.replay(&history).unwrap_or_else(|failure| {
            panic!("seed {seed}, round {round}: the history does not replay: {failure}")
        });
        assert_eq!(
            replayed.outstanding(),
            expected,
            "seed {seed}, round {round}: after replay"
        );
    }
    panic!("seed {seed}: {name} did not end in 200 turns")
}

#[test]
fn engine_and_ledger_agree_on_outstanding_work_after_every_turn_and_replay() {
    let (mut ended_with_work, mut compared, mut completed) = (0, 0, 0);
    for seed in 1..=150 {
        let (history, turns) = drive::<Everything>("Everything", 1, seed);
        compared += turns;
        if matches!(
            history.last(),
            Some(HistoryEvent::ExecutionCompleted { .. })
        ) {
            completed += 1;
        }
        assert!(matches!(
            history.last(),
            Some(
                HistoryEvent::ExecutionCompleted { .. }
                    | HistoryEvent::ExecutionFailed { .. }
                    | HistoryEvent::ExecutionTerminated { .. }
            )
        ));
        let (history, turns) = drive::<LeavesWork>("LeavesWork", 2, seed);
        compared += turns;
        let before_end = &history[..history.len() - 1];
        if !Ledger::from_history(before_end).outstanding().is_empty() {
            ended_with_work += 1;
        }
    }
    assert!(
        ended_with_work > 100,
        "the schedules rarely left work: {ended_with_work}"
    );
    assert!(compared > 1_000, "few turns were compared: {compared}");
    assert!(
        completed > 10,
        "few schedules reached the end of the code: {completed}"
    );
}

#[test]
fn the_ledger_lists_what_an_ended_execution_must_clean_up() {
    let history = vec![
        started("LeavesWork", 2),
        at(1),
        HistoryEvent::TimerCreated {
            id: TaskId(0),
            fire_at: Timestamp(3_600_001),
        },
        scheduled(1, "add_one", 2),
        HistoryEvent::SubOrchestrationCreated {
            id: TaskId(2),
            name: "Child".into(),
            instance: InstanceId::new("child").unwrap(),
            input: json(2),
        },
        HistoryEvent::LocksRequested {
            id: TaskId(3),
            entities: vec![account("held")],
        },
    ];
    let ledger = Ledger::from_history(&history);
    assert_eq!(
        ledger.outstanding(),
        vec![
            Outstanding::Timer(TaskId(0), Timestamp(3_600_001)),
            Outstanding::Activity(TaskId(1)),
            Outstanding::SubOrchestration(TaskId(2)),
            Outstanding::Locks(TaskId(3), vec![account("held")]),
        ]
    );
    // Granted locks stay outstanding until released; completed tasks do not.
    let mut ledger = ledger;
    ledger.record(&HistoryEvent::LocksGranted {
        id: TaskId(3),
        entities: vec![account("held")],
    });
    ledger.record(&completed(1, 3));
    ledger.record(&HistoryEvent::TimerCancelled { id: TaskId(0) });
    assert_eq!(
        ledger.outstanding(),
        vec![
            Outstanding::SubOrchestration(TaskId(2)),
            Outstanding::Locks(TaskId(3), vec![account("held")]),
        ]
    );
    ledger.record(&HistoryEvent::LocksReleased { id: TaskId(3) });
    assert_eq!(
        ledger.outstanding(),
        vec![Outstanding::SubOrchestration(TaskId(2))]
    );
}

#[test]
fn the_ledger_says_why_an_input_does_not_apply() {
    let mut ledger = Ledger::from_history(&[
        started("Chain", 1),
        at(1),
        scheduled(0, "add_one", 1),
        HistoryEvent::TimerCreated {
            id: TaskId(1),
            fire_at: Timestamp(9),
        },
        completed(0, 2),
    ]);
    assert_eq!(
        ledger.applies(&completed(0, 2)),
        Err("the task already completed")
    );
    assert_eq!(ledger.applies(&completed(7, 2)), Err("no such task"));
    assert_eq!(
        ledger.applies(&completed(1, 2)),
        Err("the task is of another kind")
    );
    assert_eq!(
        ledger.applies(&HistoryEvent::TimerFired { id: TaskId(1) }),
        Ok(())
    );
    assert_eq!(
        ledger.applies(&started("Chain", 1)),
        Err("the execution has already started")
    );
    assert_eq!(
        ledger.applies(&scheduled(3, "add_one", 1)),
        Err("actions are not inputs")
    );
    assert_eq!(ledger.applies(&raised("go", 1)), Ok(()));
    ledger.record(&HistoryEvent::TimerCancelled { id: TaskId(1) });
    assert_eq!(
        ledger.applies(&HistoryEvent::TimerFired { id: TaskId(1) }),
        Err("the orchestrator cancelled the task")
    );
    ledger.record(&HistoryEvent::ExecutionCompleted { output: json(2) });
    assert_eq!(
        ledger.applies(&raised("go", 1)),
        Err("the execution has ended")
    );
}

/// What a worker in another language does: it replays its own code and sends back the
/// actions of a turn; the ledger makes them history, as the engine would have.
#[test]
fn a_turn_computed_elsewhere_becomes_the_same_history() {
    let mut engine = engine::<Chain>();
    let mut ledger = Ledger::new();
    let first = engine.run_turn(Timestamp(1000), vec![started("Chain", 1)]);
    let remote = ledger.turn(
        Timestamp(1000),
        vec![started("Chain", 1)],
        vec![Action::ScheduleActivity {
            id: TaskId(0),
            name: "add_one".into(),
            input: json(1),
            retry: None,
        }],
        None,
    );
    assert_eq!(remote, first);
    let second = engine.run_turn(Timestamp(2000), vec![completed(0, 2), completed(0, 2)]);
    let remote = ledger.turn(
        Timestamp(2000),
        vec![completed(0, 2), completed(0, 2)],
        second.actions.clone(),
        None,
    );
    assert_eq!(remote.events, second.events);
    assert_eq!(remote.discarded, second.discarded);
    let third = engine.run_turn(Timestamp(3000), vec![completed(1, 3)]);
    let remote = ledger.turn(
        Timestamp(3000),
        vec![completed(1, 3)],
        vec![],
        Some(Outcome::Completed(json(3))),
    );
    assert_eq!(remote, third);
    assert!(ledger.has_ended());
    let late = ledger.turn(Timestamp(4000), vec![completed(1, 3)], vec![], None);
    assert!(late.events.is_empty());
    assert_eq!(late.discarded.len(), 1);
}
