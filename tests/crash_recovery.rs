//! Crash recovery with a real process: a child runs a workload of chains, fan-outs and
//! sub-orchestrations over a fjall store and is killed with SIGKILL mid-run; a second
//! child resumes over the same directory. Then the durable state is checked: every
//! orchestration completed with the right output, every activity ran at least once, and
//! no activity whose completion had been committed before the kill ran again.

use durable::prelude::*;
use durable::store::{Durability, FjallStore, HistoryEvent, InstanceQuery, Store};
use durable_testkit::{
    SideEffectLog, block_on, child_env, expect_success, kill_when, spawn_test_child,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

const DIR_VAR: &str = "DURABLE_CRASH_STORE";
const LOG_VAR: &str = "DURABLE_CRASH_LOG";
const RUN_VAR: &str = "DURABLE_CRASH_RUN";

static LOG: OnceLock<(SideEffectLog, String)> = OnceLock::new();

/// Appends `run|instance|task` to the side-effect log, then does its "work".
#[activity]
async fn step(ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    if let Some((log, run)) = LOG.get() {
        log.append(&format!("{run}|{}|{}", ctx.instance_id(), ctx.task_id()));
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(x + 1)
}

#[orchestrator]
async fn chain20(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let mut value = x;
    for _ in 0..20 {
        value = ctx.call_activity(step, value).await?;
    }
    Ok(value)
}

#[orchestrator]
async fn fan50(ctx: OrchestrationContext, base: u64) -> Result<u64, Error> {
    let tasks: Vec<_> = (0..50).map(|i| ctx.call_activity(step, base + i)).collect();
    Ok(ctx.join_all(tasks).await?.into_iter().sum())
}

#[orchestrator]
async fn nested(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let chained = ctx.call_sub_orchestrator(chain20, x).await?;
    let fanned = ctx.call_sub_orchestrator(fan50, chained).await?;
    Ok(chained + fanned)
}

/// The workload: instance id, orchestrator, input, expected output.
fn workload() -> Vec<(String, &'static str, u64, u64)> {
    let mut work = Vec::new();
    for i in 0..10 {
        work.push((format!("chain-{i}"), "chain20", i, i + 20));
    }
    let fan_sum = |base: u64| (0..50).map(|i| base + i + 1).sum::<u64>();
    for i in 0..4 {
        let base = i * 100;
        work.push((format!("fan-{i}"), "fan50", base, fan_sum(base)));
    }
    for i in 0..2 {
        let chained = i + 20;
        work.push((
            format!("nested-{i}"),
            "nested",
            i,
            chained + fan_sum(chained),
        ));
    }
    work
}

/// The child: starts whatever of the workload does not exist yet, waits for all of it.
#[test]
fn crash_child() {
    let Some([dir, log, run]) = child_env([DIR_VAR, LOG_VAR, RUN_VAR]) else {
        return; // only meaningful as a child process
    };
    let _ = LOG.set((SideEffectLog::new(log), run));
    block_on(async move {
        let runtime = Runtime::builder()
            .store_path(&dir)
            .register(step)
            .register(chain20)
            .register(fan50)
            .register(nested)
            .start()
            .await
            .unwrap();
        let client = runtime.client();
        for (id, name, input, _) in workload() {
            if client.status(&id).await.unwrap().is_none() {
                client
                    .start_by_name(name, Some(&id), &input.to_string())
                    .await
                    .unwrap();
            }
        }
        for (id, _, _, _) in workload() {
            client
                .wait_for_completion(&id, Duration::from_secs(60))
                .await
                .unwrap();
        }
        runtime.shutdown().await;
    });
}

/// The tasks of the final histories that `task_of` picks: (instance, task id).
fn tasks_where(
    store: &dyn Store,
    task_of: impl Fn(&HistoryEvent) -> Option<u64>,
) -> BTreeSet<(String, u64)> {
    let mut tasks = BTreeSet::new();
    for record in store
        .list_instances(&InstanceQuery::default(), None, 10_000)
        .unwrap()
    {
        for event in store.history(&record.id, record.execution).unwrap() {
            if let Some(task) = task_of(&event) {
                tasks.insert((record.id.to_string(), task));
            }
        }
    }
    tasks
}

/// Task completions committed in the store.
fn committed_completions(store: &dyn Store) -> BTreeSet<(String, u64)> {
    tasks_where(store, |event| match event {
        HistoryEvent::TaskCompleted { id, .. } => Some(id.0),
        _ => None,
    })
}

/// Tasks scheduled in the final histories: every one must have run at least once.
fn scheduled_tasks(store: &dyn Store) -> BTreeSet<(String, u64)> {
    tasks_where(store, |event| match event {
        HistoryEvent::TaskScheduled { id, .. } => Some(id.0),
        _ => None,
    })
}

fn open(dir: &Path) -> FjallStore {
    FjallStore::open(dir, Durability::Fsync).unwrap()
}

#[test]
fn sigkill_mid_run_loses_nothing_and_reruns_only_uncommitted_activities() {
    let temp = tempfile::tempdir().unwrap();
    let store_dir = temp.path().join("store");
    let log = SideEffectLog::new(temp.path().join("side-effects.log"));
    let env = |run: &str| {
        vec![
            (DIR_VAR, store_dir.display().to_string()),
            (LOG_VAR, log.path().display().to_string()),
            (RUN_VAR, run.to_owned()),
        ]
    };

    let first = spawn_test_child("crash_child", &env("1"));
    let progressed = kill_when(first, || log.lines().len() >= 150);
    assert!(progressed, "the first run made no progress before the kill");

    let committed = committed_completions(&open(&store_dir));
    let total = workload().len();
    assert!(
        !committed.is_empty(),
        "some completions were committed before the kill"
    );

    expect_success(spawn_test_child("crash_child", &env("2")), "the second run");

    let store = open(&store_dir);
    for (id, _, _, expected) in workload() {
        let record = store
            .instance(&durable::InstanceId::new(&id).unwrap())
            .unwrap()
            .unwrap_or_else(|| panic!("{id} is missing"));
        assert_eq!(
            record.status,
            RuntimeStatus::Completed,
            "{id}: {:?}",
            record.failure
        );
        assert_eq!(
            record.output.unwrap().decode::<u64>().unwrap(),
            expected,
            "{id}"
        );
    }

    let mut runs: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split('|').collect();
        let [run, instance, task] = parts[..] else {
            panic!("malformed log line {line:?}")
        };
        runs.entry((instance.to_owned(), task.parse().unwrap()))
            .or_default()
            .push(run.to_owned());
    }
    for task in scheduled_tasks(&store) {
        assert!(runs.contains_key(&task), "{task:?} never ran");
    }
    for task in &committed {
        let executions = &runs[task];
        assert_eq!(
            executions,
            &vec!["1".to_owned()],
            "{task:?} ran again after its completion was committed"
        );
    }
    let reruns = runs.values().filter(|r| r.len() > 1).count();
    eprintln!(
        "crash test: {total} instances, {} activities, {} committed before the kill, {reruns} re-run",
        runs.len(),
        committed.len()
    );
}
