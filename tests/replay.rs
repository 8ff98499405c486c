//! Replay: hot instances are never replayed; a restart replays once and finishes; code
//! that changed between runs fails the instance with a nondeterminism error instead of
//! hanging or silently diverging.

use durable::client::Error as ClientError;
use durable::prelude::*;
use durable_testkit::poll_once;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

const WAIT: Duration = Duration::from_secs(60);

static STEPS: AtomicU64 = AtomicU64::new(0);
/// Whether step 1000 stops halfway: set for the run that is restarted there.
static STOP_HALFWAY: AtomicBool = AtomicBool::new(false);
static HALFWAY: Notify = Notify::const_new();
static HALFWAY_GATE: Semaphore = Semaphore::const_new(0);

#[activity]
async fn step(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    if STEPS.fetch_add(1, Ordering::SeqCst) + 1 == 1000 && STOP_HALFWAY.load(Ordering::SeqCst) {
        // Holds the run at step 1000 until the test has begun the shutdown.
        HALFWAY.notify_one();
        let _permit = HALFWAY_GATE.acquire().await?;
    }
    Ok(x + 1)
}

#[orchestrator]
async fn long_chain(ctx: OrchestrationContext, steps: u64) -> Result<u64, Error> {
    let mut value = 0;
    for _ in 0..steps {
        value = ctx.call_activity(step, value).await?;
    }
    Ok(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_steps_hot_replay_nothing_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Runtime::builder()
            .store_path(dir.path())
            .register(step)
            .register(long_chain)
            .start()
    };

    // Hot: a whole 2,000-step run replays no history at all.
    let runtime = start().await.unwrap();
    let instance = runtime.client().start(long_chain, 2000).await.unwrap();
    assert_eq!(instance.wait(WAIT).await.unwrap(), 2000);
    let metrics = runtime.metrics();
    assert_eq!(metrics.history_events_replayed, 0, "{metrics:?}");
    assert_eq!(metrics.replays, 0, "{metrics:?}");
    assert!(metrics.turns >= 2001, "{metrics:?}");

    // Restarted halfway: one replay, then the run finishes. Step 1000 waits until the
    // shutdown has begun (it then takes no more work), so the restart comes halfway on
    // any machine; the shutdown lets that step finish and commits it.
    STEPS.store(0, Ordering::SeqCst);
    STOP_HALFWAY.store(true, Ordering::SeqCst);
    let instance = runtime
        .client()
        .start_with_id(long_chain, "restarted", 2000)
        .await
        .unwrap();
    HALFWAY.notified().await;
    let mut shutdown = Box::pin(runtime.shutdown());
    assert!(poll_once(&mut shutdown).await.is_pending());
    HALFWAY_GATE.add_permits(1);
    shutdown.await;
    let before_restart = STEPS.load(Ordering::SeqCst);
    assert!(before_restart < 2000, "the run finished before the restart");

    let runtime = start().await.unwrap();
    let client = runtime.client();
    let status = client
        .wait_for_completion(instance.id(), WAIT)
        .await
        .unwrap();
    assert_eq!(status.output_as::<u64>().unwrap(), Some(2000));
    let metrics = runtime.metrics();
    assert_eq!(metrics.replays, 1, "{metrics:?}");
    assert!(metrics.history_events_replayed >= 2 * 1000, "{metrics:?}");
    // Only activities whose completion was not committed ran twice: at most one here.
    let total = STEPS.load(Ordering::SeqCst);
    assert!(
        (2000..=2001).contains(&total),
        "{total} activity runs for 2000 steps"
    );
    runtime.shutdown().await;
}

static CODE_CHANGED: AtomicBool = AtomicBool::new(false);
static GATE_REACHED: Notify = Notify::const_new();
static GATE: Semaphore = Semaphore::const_new(0);

#[activity]
async fn a(_ctx: ActivityContext, _input: ()) -> Result<(), Error> {
    Ok(())
}

#[activity]
async fn b(_ctx: ActivityContext, _input: ()) -> Result<(), Error> {
    Ok(())
}

#[activity]
async fn gate(_ctx: ActivityContext, _input: ()) -> Result<(), Error> {
    GATE_REACHED.notify_one();
    let _permit = GATE.acquire().await?;
    Ok(())
}

#[orchestrator]
async fn versioned(ctx: OrchestrationContext, _input: ()) -> Result<(), Error> {
    // A "deployment" between the two runs changes the first step.
    if CODE_CHANGED.load(Ordering::SeqCst) {
        ctx.call_activity(b, ()).await?;
    } else {
        ctx.call_activity(a, ()).await?;
    }
    ctx.call_activity(gate, ()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_changed_between_runs_fails_with_nondeterminism() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Runtime::builder()
            .store_path(dir.path())
            .register(a)
            .register(b)
            .register(gate)
            .register(versioned)
            .shutdown_timeout(Duration::from_millis(50))
            .start()
    };
    let runtime = start().await.unwrap();
    let reached = GATE_REACHED.notified();
    runtime
        .client()
        .start_with_id(versioned, "v1", ())
        .await
        .unwrap();
    reached.await;
    runtime.shutdown().await;

    CODE_CHANGED.store(true, Ordering::SeqCst);
    GATE.add_permits(100);
    let runtime = start().await.unwrap();
    let status = runtime
        .client()
        .wait_for_completion("v1", WAIT)
        .await
        .unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, ErrorKind::NonDeterminism);
    assert!(
        failure.message.contains("activity `a`"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("activity `b`"),
        "{}",
        failure.message
    );
    // The failed id can be started again, now with the new code throughout.
    let again = runtime
        .client()
        .start_with_id(versioned, "v1", ())
        .await
        .unwrap();
    again.wait(WAIT).await.unwrap();
    runtime.shutdown().await;
    let after = runtime_client_after_shutdown(&dir).await;
    assert!(matches!(after, ClientError::ShuttingDown), "{after:?}");
}

/// A client of a runtime that has shut down answers `ShuttingDown`.
async fn runtime_client_after_shutdown(dir: &tempfile::TempDir) -> ClientError {
    let runtime = Runtime::builder()
        .store_path(dir.path())
        .register(versioned)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    runtime.shutdown().await;
    client.status("v1").await.unwrap_err()
}

#[orchestrator]
async fn long_wait(ctx: OrchestrationContext) -> Result<(), Error> {
    ctx.sleep(Duration::from_secs(3600)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_orchestrator_is_gone_can_still_be_terminated_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .store_path(dir.path())
        .register(long_wait)
        .start()
        .await
        .unwrap();
    runtime
        .client()
        .start_with_id(long_wait, "orphan", ())
        .await
        .unwrap();
    runtime.shutdown().await;

    // A new deployment no longer has `long_wait`.
    let runtime = Runtime::builder()
        .store_path(dir.path())
        .register(a)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    client.terminate("orphan", "retired").await.unwrap();
    let status = client.wait_for_completion("orphan", WAIT).await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Terminated);
    client.purge("orphan").await.unwrap();
    assert!(client.status("orphan").await.unwrap().is_none());
    runtime.shutdown().await;
    let store = durable::store::FjallStore::open(dir.path(), durable::Durability::Fsync).unwrap();
    use durable::store::Store;
    assert!(
        store.scan_timers(None, 10).unwrap().is_empty(),
        "its timer was cancelled"
    );
}
