//! `Runtime::shutdown` under load: it stops taking work, lets running activities finish (up
//! to the shutdown timeout), commits what finished and returns; the next start resumes the
//! rest. Across a graceful restart nothing is lost and no activity that finished runs
//! again.

use durable::prelude::*;
use durable_testkit::poll_once;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

const INSTANCES: u64 = 100;
const STEPS: u64 = 5;

/// Runs of each activity task, by idempotency key, across both runtimes of a test.
static RUNS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

fn record_run(ctx: &ActivityContext) {
    *RUNS
        .lock()
        .unwrap()
        .entry(ctx.idempotency_key())
        .or_default() += 1;
}

/// The third steps of the chains wait here until the test has begun the shutdown: so the
/// shutdown always comes in the middle of the work, with activities running.
static THIRD_STEPS: Semaphore = Semaphore::const_new(0);
/// Third steps that reached the gate, and the signal that all of them did.
static AT_THIRD_STEP: AtomicU64 = AtomicU64::new(0);
static ALL_AT_THIRD_STEP: Notify = Notify::const_new();

#[activity]
async fn step(ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    record_run(&ctx);
    // Chain `i` starts at `i * 100`: its third step's input ends in 2.
    if x % 100 == 2 {
        if AT_THIRD_STEP.fetch_add(1, Ordering::SeqCst) + 1 == INSTANCES {
            ALL_AT_THIRD_STEP.notify_one();
        }
        let _permit = THIRD_STEPS.acquire().await?;
    }
    tokio::time::sleep(Duration::from_millis(2 + x % 9)).await;
    Ok(x + 1)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, start: u64) -> Result<u64, Error> {
    let mut x = start;
    for _ in 0..STEPS {
        x = ctx.call_activity(step, x).await?;
    }
    Ok(x)
}

/// Opened only after the shutdown of the test that uses `slow`: `slow` outlives it.
static SLOW_GATE: Semaphore = Semaphore::const_new(0);
static SLOW_STARTED: Notify = Notify::const_new();

/// Runs until the test opens its gate; returns its input.
#[activity]
async fn slow(ctx: ActivityContext, input: u64) -> Result<u64, Error> {
    record_run(&ctx);
    SLOW_STARTED.notify_one();
    let _permit = SLOW_GATE.acquire().await?;
    Ok(input)
}

#[orchestrator]
async fn call_slow(ctx: OrchestrationContext, millis: u64) -> Result<u64, Error> {
    ctx.call_activity(slow, millis).await
}

async fn open(dir: &std::path::Path, shutdown_timeout: Duration) -> Runtime {
    Runtime::builder()
        .store_path(dir)
        .shutdown_timeout(shutdown_timeout)
        .register(step)
        .register(chain)
        .register(slow)
        .register(call_slow)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_under_load_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = open(dir.path(), Duration::from_secs(10)).await;
    let client = runtime.client();
    let mut ids = Vec::new();
    for i in 0..INSTANCES {
        let id = format!("chain-{i}");
        client.start_with_id(chain, &id, i * 100).await.unwrap();
        ids.push(id);
    }
    // Shut down in the middle of the work: every chain has done two steps and waits in
    // its third. The shutdown stops taking work first; then the third steps may finish,
    // and it must wait for them and commit their results.
    let total = INSTANCES * STEPS;
    ALL_AT_THIRD_STEP.notified().await;
    let done_before = runtime.metrics().activities_completed;
    let mut shutdown = Box::pin(runtime.shutdown());
    assert!(poll_once(&mut shutdown).await.is_pending());
    THIRD_STEPS.add_permits(INSTANCES as usize);
    shutdown.await;
    let runs_before: u32 = RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|(key, _)| key.starts_with("chain-"))
        .map(|(_, runs)| runs)
        .sum();
    assert!(
        u64::from(runs_before) < total,
        "the shutdown came after all the work: {runs_before} runs"
    );

    let runtime = open(dir.path(), Duration::from_secs(10)).await;
    let client = runtime.client();
    for (i, id) in (0..INSTANCES).zip(&ids) {
        let status = client
            .wait_for_completion(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(status.runtime_status, RuntimeStatus::Completed, "{id}");
        assert_eq!(status.output_as::<u64>().unwrap(), Some(i * 100 + STEPS));
    }
    let runs = RUNS.lock().unwrap().clone();
    let chain_runs: BTreeMap<_, _> = runs
        .iter()
        .filter(|(key, _)| key.starts_with("chain-"))
        .collect();
    assert_eq!(
        chain_runs.len() as u64,
        total,
        "every step of every chain ran"
    );
    let repeated: Vec<_> = chain_runs.iter().filter(|(_, runs)| ***runs != 1).collect();
    assert!(
        repeated.is_empty(),
        "activities that finished before a graceful shutdown ran again: {repeated:?}"
    );
    eprintln!(
        "{done_before} of {total} activities done before the shutdown, {runs_before} started; the rest after the restart, none twice"
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_outliving_the_shutdown_timeout_runs_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = open(dir.path(), Duration::from_millis(50)).await;
    let client = runtime.client();
    let started = SLOW_STARTED.notified();
    client
        .start_with_id(call_slow, "slow-1", 500)
        .await
        .unwrap();
    started.await;
    // Shutdown gives up on it after 50 ms: its result is not committed.
    runtime.shutdown().await;

    // Open: the run abandoned by the shutdown ends into a stopped runtime, the run after
    // the restart completes.
    SLOW_GATE.add_permits(2);
    let runtime = open(dir.path(), Duration::from_secs(10)).await;
    let status = runtime
        .client()
        .wait_for_completion("slow-1", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(status.output_as::<u64>().unwrap(), Some(500));
    let runs = RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|(key, _)| key.starts_with("slow-1:"))
        .map(|(_, runs)| *runs)
        .collect::<Vec<_>>();
    assert_eq!(
        runs,
        vec![2],
        "shutdown did not wait past its timeout, so the result was never committed and it ran again"
    );
    runtime.shutdown().await;
}
