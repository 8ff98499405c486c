//! Crash recovery of waiting instances, with a real process killed by SIGKILL:
//! - 100 instances wait on durable timers; the process dies before they come due and
//!   restarts after: every timer fires exactly once, and the work after it runs once.
//! - 100 instances wait on external events; the process dies; a fresh runtime on the same
//!   store raises the events: every instance gets its own.

use durable::Clock;
use durable::prelude::*;
use durable::store::{Durability, FjallStore, HistoryEvent, InstanceId, Store};
use durable_testkit::{
    SideEffectLog, block_on, child_env, expect_success, kill_when, spawn_test_child,
};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

const DIR_VAR: &str = "DURABLE_WAITS_STORE";
const LOG_VAR: &str = "DURABLE_WAITS_LOG";
const MODE_VAR: &str = "DURABLE_WAITS_MODE";
const READY_VAR: &str = "DURABLE_WAITS_READY";
const DUE_VAR: &str = "DURABLE_WAITS_DUE_MS";
/// The time of the child's manual clock, in milliseconds since the epoch: a durable timer
/// comes due in a child whose clock is past it, and in no other.
const CLOCK_VAR: &str = "DURABLE_WAITS_CLOCK_MS";
const INSTANCES: u64 = 100;
/// The first child's clock.
const START_MS: u64 = 1_800_000_000_000;
const HOUR_MS: u64 = 3_600_000;

static LOG: OnceLock<SideEffectLog> = OnceLock::new();

/// The work after the timer: logs that it ran.
#[activity]
async fn after_timer(ctx: ActivityContext) -> Result<(), Error> {
    if let Some(log) = LOG.get() {
        log.append(ctx.instance_id().as_str());
    }
    Ok(())
}

/// Waits until an absolute time, then does its work.
#[orchestrator]
async fn wake_at(ctx: OrchestrationContext, due_ms: u64) -> Result<u64, Error> {
    ctx.create_timer(UNIX_EPOCH + Duration::from_millis(due_ms))
        .await?;
    ctx.call_activity(after_timer, ()).await?;
    Ok(due_ms)
}

#[orchestrator]
async fn await_go(ctx: OrchestrationContext) -> Result<u64, Error> {
    ctx.wait_for_event::<u64>("go").await
}

/// The child process. Modes: `start-timers`, `start-waits` (start the instances, signal,
/// then wait to be killed), `finish-timers` (wait for all), `raise` (raise every event,
/// then wait for all).
#[test]
fn waits_child() {
    let Some([dir, mode, clock_ms]) = child_env([DIR_VAR, MODE_VAR, CLOCK_VAR]) else {
        return; // only meaningful as a child process
    };
    if let Ok(log) = std::env::var(LOG_VAR) {
        let _ = LOG.set(SideEffectLog::new(log));
    }
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_millis(clock_ms.parse().unwrap()));
    block_on(async move {
        let runtime = Runtime::builder()
            .store_path(&dir)
            .clock(clock)
            .register(after_timer)
            .register(wake_at)
            .register(await_go)
            .start()
            .await
            .unwrap();
        let client = runtime.client();
        match mode.as_str() {
            "start-timers" => {
                let due: u64 = std::env::var(DUE_VAR).unwrap().parse().unwrap();
                for i in 0..INSTANCES {
                    client
                        .start_with_id(wake_at, format!("timer-{i}"), due + i)
                        .await
                        .unwrap();
                }
                signal_ready();
                std::future::pending::<()>().await;
            }
            "start-waits" => {
                for i in 0..INSTANCES {
                    client
                        .start_with_id(await_go, format!("wait-{i}"), ())
                        .await
                        .unwrap();
                }
                signal_ready();
                std::future::pending::<()>().await;
            }
            "finish-timers" => {
                for i in 0..INSTANCES {
                    let id = format!("timer-{i}");
                    client
                        .wait_for_completion(&id, Duration::from_secs(60))
                        .await
                        .unwrap();
                }
            }
            "raise" => {
                for i in 0..INSTANCES {
                    client
                        .raise_event(format!("wait-{i}"), "go", i)
                        .await
                        .unwrap();
                }
                for i in 0..INSTANCES {
                    let id = format!("wait-{i}");
                    client
                        .wait_for_completion(&id, Duration::from_secs(60))
                        .await
                        .unwrap();
                }
            }
            other => panic!("unknown mode {other}"),
        }
        runtime.shutdown().await;
    });
}

fn signal_ready() {
    if let Ok(path) = std::env::var(READY_VAR) {
        std::fs::write(path, b"ready").unwrap();
    }
}

fn open(dir: &Path) -> FjallStore {
    FjallStore::open(dir, Durability::Fsync).unwrap()
}

fn history(store: &FjallStore, id: &str) -> (RuntimeStatus, Option<u64>, Vec<HistoryEvent>) {
    let id = InstanceId::new(id).unwrap();
    let record = store.instance(&id).unwrap().unwrap();
    let output = record
        .output
        .as_ref()
        .map(|output| output.decode().unwrap());
    let history = store.history(&id, record.execution).unwrap();
    (record.status, output, history)
}

/// Runs a child in `mode` until it signals readiness, then kills it with SIGKILL.
fn run_and_kill(env: &[(&str, String)], ready: &Path) {
    let child = spawn_test_child("waits_child", env);
    let started = kill_when(child, || ready.exists());
    assert!(started, "the child did not start its instances");
}

fn run_to_end(env: &[(&str, String)]) {
    expect_success(spawn_test_child("waits_child", env), "the child");
}

#[test]
fn timers_due_while_the_process_was_dead_fire_exactly_once_after_restart() {
    let temp = tempfile::tempdir().unwrap();
    let store = temp.path().join("store");
    let ready = temp.path().join("ready");
    let log = SideEffectLog::new(temp.path().join("after-timer.log"));
    // Due after the first process's time (its clock stands still), before the second's.
    let due = START_MS + 1_500;
    let env = |mode: &str, clock_ms: u64| {
        vec![
            (DIR_VAR, store.display().to_string()),
            (LOG_VAR, log.path().display().to_string()),
            (MODE_VAR, mode.to_owned()),
            (READY_VAR, ready.display().to_string()),
            (DUE_VAR, due.to_string()),
            (CLOCK_VAR, clock_ms.to_string()),
        ]
    };
    run_and_kill(&env("start-timers", START_MS), &ready);
    {
        let store = open(&store);
        assert_eq!(
            store.scan_timers(None, 1000).unwrap().len(),
            INSTANCES as usize
        );
    }
    // The restart comes an hour later, when every timer is due: they fire right after
    // start-up.
    assert!(due + INSTANCES < START_MS + HOUR_MS);
    run_to_end(&env("finish-timers", START_MS + HOUR_MS));

    let store = open(&store);
    for i in 0..INSTANCES {
        let (status, output, history) = history(&store, &format!("timer-{i}"));
        assert_eq!(status, RuntimeStatus::Completed, "timer-{i}");
        assert_eq!(output, Some(due + i));
        let fired = history
            .iter()
            .filter(|e| matches!(e, HistoryEvent::TimerFired { .. }))
            .count();
        assert_eq!(fired, 1, "timer-{i} fired {fired} times");
    }
    assert!(store.scan_timers(None, 10).unwrap().is_empty());
    let mut lines = log.lines();
    lines.sort();
    let mut expected: Vec<String> = (0..INSTANCES).map(|i| format!("timer-{i}")).collect();
    expected.sort();
    assert_eq!(
        lines, expected,
        "the work after each timer ran exactly once"
    );
}

#[test]
fn events_raised_through_a_fresh_runtime_reach_instances_that_waited_before_the_crash() {
    let temp = tempfile::tempdir().unwrap();
    let store = temp.path().join("store");
    let ready = temp.path().join("ready");
    let env = |mode: &str| {
        vec![
            (DIR_VAR, store.display().to_string()),
            (MODE_VAR, mode.to_owned()),
            (READY_VAR, ready.display().to_string()),
            (CLOCK_VAR, START_MS.to_string()),
        ]
    };
    run_and_kill(&env("start-waits"), &ready);
    run_to_end(&env("raise"));

    let store = open(&store);
    for i in 0..INSTANCES {
        let (status, output, history) = history(&store, &format!("wait-{i}"));
        assert_eq!(status, RuntimeStatus::Completed, "wait-{i}");
        assert_eq!(output, Some(i), "wait-{i} got another instance's event");
        let raised = history
            .iter()
            .filter(|e| matches!(e, HistoryEvent::EventRaised { .. }))
            .count();
        assert_eq!(raised, 1);
    }
}
