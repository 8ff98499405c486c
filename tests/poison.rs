//! Poison work does not loop forever: an orchestration whose turns keep failing inside the
//! runtime (here: a store whose history reads panic for one instance) is marked `Failed`
//! with the reason after `max_turn_attempts`, while every other instance keeps running;
//! an activity that always fails ends its instance once its retry policy is spent. An
//! activity that crashes the process is failed after `max_activity_restarts` abrupt ends;
//! graceful restarts are not counted, and the activities that ran beside the poison one
//! are not failed with it.

use durable::prelude::*;
use durable_store::{
    ActivityKey, ActivityWorkItem, Durability, EntityId, EntityRecord, Error as StoreError,
    ExecutionId, HistoryEvent, InboxKey, InboxMessage, InstanceId, InstanceQuery, InstanceRecord,
    MemoryStore, Store, TimerKey, TimerRecord, WriteBatch,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A memory store whose history reads panic for one instance once armed.
struct PanickyStore {
    inner: MemoryStore,
    victim: InstanceId,
    armed: AtomicBool,
    panics: AtomicU64,
}

impl Store for PanickyStore {
    fn name(&self) -> &'static str {
        "panicky-memory"
    }
    fn durability(&self) -> Durability {
        self.inner.durability()
    }
    fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.inner.commit(batch)
    }
    fn execution_floor(&self) -> Result<ExecutionId, StoreError> {
        self.inner.execution_floor()
    }
    fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        self.inner.instance(id)
    }
    fn history(
        &self,
        id: &InstanceId,
        execution: ExecutionId,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        if *id == self.victim && self.armed.load(Ordering::SeqCst) {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("injected: the history of {id} cannot be read");
        }
        self.inner.history(id, execution)
    }
    fn inbox(&self, id: &InstanceId) -> Result<Vec<(InboxKey, InboxMessage)>, StoreError> {
        self.inner.inbox(id)
    }
    fn inbox_page(
        &self,
        id: &InstanceId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, StoreError> {
        self.inner.inbox_page(id, after, limit)
    }
    fn scan_inbox(
        &self,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, StoreError> {
        self.inner.scan_inbox(after, limit)
    }
    fn stopped_gracefully(&self) -> Result<bool, StoreError> {
        self.inner.stopped_gracefully()
    }
    fn activity(&self, key: &ActivityKey) -> Result<Option<ActivityWorkItem>, StoreError> {
        self.inner.activity(key)
    }
    fn scan_activities(
        &self,
        after: Option<&ActivityKey>,
        limit: usize,
    ) -> Result<Vec<ActivityWorkItem>, StoreError> {
        self.inner.scan_activities(after, limit)
    }
    fn scan_timers(
        &self,
        after: Option<&TimerKey>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        self.inner.scan_timers(after, limit)
    }
    fn entity(&self, id: &EntityId) -> Result<Option<EntityRecord>, StoreError> {
        self.inner.entity(id)
    }
    fn list_entities(
        &self,
        name: Option<&str>,
        after: Option<&EntityId>,
        limit: usize,
    ) -> Result<Vec<EntityRecord>, StoreError> {
        self.inner.list_entities(name, after, limit)
    }
    fn list_instances(
        &self,
        query: &InstanceQuery,
        after: Option<&InstanceId>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.inner.list_instances(query, after, limit)
    }
}

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[activity]
async fn always_fails(_ctx: ActivityContext, _x: u64) -> Result<u64, Error> {
    Err(Error::msg("the service is down"))
}

#[orchestrator]
async fn waiter(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let step: u64 = ctx.wait_for_event("go").await?;
    ctx.call_activity(add_one, x + step).await
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let mut x = x;
    for _ in 0..5 {
        x = ctx.call_activity(add_one, x).await?;
    }
    Ok(x)
}

#[orchestrator]
async fn retry_forever_ish(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let policy = RetryPolicy {
        max_attempts: 4,
        first_interval: Duration::from_millis(1),
        backoff_coefficient: 1.0,
        max_interval: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    ctx.call_activity_with_retry(always_fails, x, policy).await
}

/// Runs `n` chains of five activities at once; how long they took.
async fn run_chains(client: &Client, n: u64) -> Duration {
    let began = Instant::now();
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(client.start(chain, i).await.unwrap());
    }
    for (i, handle) in (0..).zip(handles) {
        assert_eq!(handle.wait(WAIT).await.unwrap(), i + 5);
    }
    began.elapsed()
}

async fn start(store: Arc<PanickyStore>) -> Runtime {
    Runtime::builder()
        .store(store)
        // One shard runs every instance, so work that completes after the victim failed
        // has passed through the shard that retried it.
        .orchestration_threads(1)
        .max_turn_attempts(3)
        .register(add_one)
        .register(always_fails)
        .register(waiter)
        .register(chain)
        .register(retry_forever_ish)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_keeps_failing_inside_the_runtime_fails_its_instance_only() {
    let store = Arc::new(PanickyStore {
        inner: MemoryStore::new(),
        victim: InstanceId::new("victim").unwrap(),
        armed: AtomicBool::new(false),
        panics: AtomicU64::new(0),
    });
    let runtime = start(Arc::clone(&store)).await;
    let client = runtime.client();
    client.start_with_id(waiter, "victim", 10).await.unwrap();
    for i in 0..20 {
        client
            .start_with_id(waiter, format!("healthy-{i}"), i)
            .await
            .unwrap();
    }
    let baseline = run_chains(&client, 200).await;
    // Nothing hot survives the restart: every instance replays from the store.
    runtime.shutdown().await;
    store.armed.store(true, Ordering::SeqCst);

    let runtime = start(Arc::clone(&store)).await;
    let client = runtime.client();
    // The event to the victim is stored; running its turn is what fails.
    let _ = client.raise_event("victim", "go", 1_u64).await;
    for i in 0..20 {
        client
            .raise_event(format!("healthy-{i}"), "go", 1_u64)
            .await
            .unwrap();
    }
    // New work meanwhile keeps its pace (measured, not asserted: shared machines).
    let meanwhile = run_chains(&client, 200).await;
    let status = client.wait_for_completion("victim", WAIT).await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed, "{status:?}");
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, ErrorKind::Internal, "{failure}");
    assert!(failure.message.contains("3 times"), "{failure}");
    assert!(
        failure.message.contains("injected: the history of victim"),
        "{failure}"
    );
    let panics = store.panics.load(Ordering::SeqCst);
    assert!(
        (3..=8).contains(&panics),
        "bounded attempts (3 turns, then the failing path's own reads): {panics}"
    );

    for i in 0..20 {
        let status = client
            .wait_for_completion(format!("healthy-{i}"), WAIT)
            .await
            .unwrap();
        assert_eq!(status.output_as::<u64>().unwrap(), Some(i + 2));
    }
    eprintln!(
        "victim failed after {panics} injected panics; 200 chains of 5: {baseline:?} before, {meanwhile:?} while the victim was retried and failed"
    );
    // The panics stop: the ended victim is not retried. (The shard takes up the instances
    // it retries each time it wakes, so a chain run to its end through it would meet one.)
    run_chains(&client, 1).await;
    assert_eq!(store.panics.load(Ordering::SeqCst), panics);
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_activity_that_always_fails_ends_its_instance_after_its_retries() {
    let store = Arc::new(PanickyStore {
        inner: MemoryStore::new(),
        victim: InstanceId::new("nobody").unwrap(),
        armed: AtomicBool::new(false),
        panics: AtomicU64::new(0),
    });
    let runtime = start(store).await;
    let client = runtime.client();
    let handle = client.start(retry_forever_ish, 1).await.unwrap();
    let status = client.wait_for_completion(handle.id(), WAIT).await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert!(
        failure.to_string().contains("the service is down"),
        "{failure}"
    );
    let history = client
        .status_with_history(handle.id())
        .await
        .unwrap()
        .unwrap()
        .history
        .unwrap();
    let attempts = history
        .iter()
        .filter(|event| event.kind() == "TaskScheduled")
        .count();
    assert_eq!(attempts, 4, "exactly the policy's attempts");
    runtime.shutdown().await;
}

/// Kills its process: the kind of activity that no error handling can catch.
#[activity]
async fn crash_the_process(_ctx: ActivityContext, _x: u64) -> Result<u64, Error> {
    std::process::abort();
}

#[orchestrator]
async fn call_crasher(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(crash_the_process, x).await
}

const CRASH_DIR_VAR: &str = "DURABLE_POISON_DIR";
const MAX_RESTARTS: u32 = 3;

async fn open_crash_store(dir: &str) -> Runtime {
    Runtime::builder()
        .store_path(dir)
        .max_activity_restarts(MAX_RESTARTS)
        .register(crash_the_process)
        .register(call_crasher)
        .register(add_one)
        .register(chain)
        .start()
        .await
        .unwrap()
}

/// Runs the child test `child` on the store at `path` again and again until it exits
/// cleanly; returns how many runs crashed.
fn runs_that_crash(child: &str, dir_var: &str, path: &str) -> u32 {
    let mut crashes = 0;
    loop {
        let status = durable_testkit::spawn_test_child(child, &[(dir_var, path.to_owned())])
            .wait()
            .unwrap();
        if status.success() {
            return crashes;
        }
        crashes += 1;
        assert!(
            crashes <= MAX_RESTARTS + 5,
            "still crashing after {crashes} runs"
        );
    }
}

/// The child: starts the crasher (once) and the healthy chains, then waits; the crashing
/// activity aborts the process, until the runtime stops running it.
#[test]
fn crash_loop_child() {
    let Some([dir]) = durable_testkit::child_env([CRASH_DIR_VAR]) else {
        return; // only meaningful as a child process
    };
    durable_testkit::block_on(async move {
        let runtime = open_crash_store(&dir).await;
        let client = runtime.client();
        if client.status("crasher").await.unwrap().is_none() {
            client
                .start_with_id(call_crasher, "crasher", 1)
                .await
                .unwrap();
        }
        client
            .wait_for_completion("crasher", Duration::from_secs(30))
            .await
            .unwrap();
        runtime.shutdown().await;
    });
}

#[tokio::test]
async fn an_activity_that_crashes_the_process_is_failed_after_max_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let crashes = runs_that_crash("crash_loop_child", CRASH_DIR_VAR, &path);
    // Run 1 crashes; start-ups 2..=MAX_RESTARTS+1 find it unfinished and run it again
    // until the count passes the limit.
    assert_eq!(crashes, MAX_RESTARTS + 1, "runs that crashed");

    let runtime = open_crash_store(&path).await;
    let client = runtime.client();
    let status = client.status("crasher").await.unwrap().unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    let text = failure.to_string();
    assert!(text.contains("crash_the_process"), "{text}");
    assert!(text.contains("max_activity_restarts"), "{text}");
    // The runtime itself works on.
    let handle = client.start(chain, 1).await.unwrap();
    assert_eq!(handle.wait(WAIT).await.unwrap(), 6);
    runtime.shutdown().await;
}

/// Finishes only once released; until then it waits for its cancellation, as a long job
/// does when the runtime shuts down.
#[activity]
async fn long_job(ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    LONG_JOB_RUNS.fetch_add(1, Ordering::SeqCst);
    if LONG_JOB_RELEASED.load(Ordering::SeqCst) {
        return Ok(x);
    }
    ctx.cancelled().await;
    Err(Error::new(
        ErrorKind::Application,
        "stopped before it finished",
    ))
}

static LONG_JOB_RUNS: AtomicU64 = AtomicU64::new(0);
static LONG_JOB_RELEASED: AtomicBool = AtomicBool::new(false);

#[orchestrator]
async fn call_long_job(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(long_job, x).await
}

#[tokio::test]
async fn graceful_restarts_are_not_counted_against_a_long_activity() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Runtime::builder()
            .store_path(dir.path())
            .max_activity_restarts(MAX_RESTARTS)
            .register(long_job)
            .register(call_long_job)
            .start()
    };
    // A deploy loop: each run starts the job and is shut down while it runs, more times
    // than the guard allows abrupt ends.
    for run in 0..(MAX_RESTARTS + 3) {
        let runs_before = LONG_JOB_RUNS.load(Ordering::SeqCst);
        let runtime = open().await.unwrap();
        if run == 0 {
            runtime
                .client()
                .start_with_id(call_long_job, "long", 7)
                .await
                .unwrap();
        }
        let deadline = Instant::now() + WAIT;
        while LONG_JOB_RUNS.load(Ordering::SeqCst) == runs_before {
            assert!(
                Instant::now() < deadline,
                "run {run}: the job did not start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        runtime.shutdown().await;
    }
    LONG_JOB_RELEASED.store(true, Ordering::SeqCst);
    let runtime = open().await.unwrap();
    let client = runtime.client();
    let status = client.wait_for_completion("long", WAIT).await.unwrap();
    assert_eq!(
        status.runtime_status,
        RuntimeStatus::Completed,
        "{:?}",
        status.failure
    );
    assert_eq!(
        status.output,
        Some(durable_store::Json::encode(&7u64).unwrap())
    );
    runtime.shutdown().await;
}

/// Sleeps long enough that the crasher, started after it, always kills the process first.
#[activity]
async fn neighbour_job(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    NEIGHBOUR_RUNNING.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(x)
}

static NEIGHBOUR_RUNNING: AtomicBool = AtomicBool::new(false);

#[orchestrator]
async fn call_neighbour(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(neighbour_job, x).await
}

const NEIGHBOURS_DIR_VAR: &str = "DURABLE_POISON_NEIGHBOURS_DIR";

async fn open_neighbours_store(dir: &str) -> Runtime {
    Runtime::builder()
        .store_path(dir)
        .max_activity_restarts(MAX_RESTARTS)
        .register(crash_the_process)
        .register(call_crasher)
        .register(neighbour_job)
        .register(call_neighbour)
        .start()
        .await
        .unwrap()
}

/// The child: starts the neighbour's long job, then (once it runs) the crasher, and waits
/// for both to end.
#[test]
fn neighbours_child() {
    let Some([dir]) = durable_testkit::child_env([NEIGHBOURS_DIR_VAR]) else {
        return; // only meaningful as a child process
    };
    durable_testkit::block_on(async move {
        let runtime = open_neighbours_store(&dir).await;
        let client = runtime.client();
        if client.status("neighbour").await.unwrap().is_none() {
            client
                .start_with_id(call_neighbour, "neighbour", 5)
                .await
                .unwrap();
            while !NEIGHBOUR_RUNNING.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
                .start_with_id(call_crasher, "crasher", 1)
                .await
                .unwrap();
        }
        for id in ["crasher", "neighbour"] {
            client
                .wait_for_completion(id, Duration::from_secs(60))
                .await
                .unwrap();
        }
        runtime.shutdown().await;
    });
}

#[tokio::test]
async fn a_poison_activity_does_not_take_its_neighbours_down_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let crashes = runs_that_crash("neighbours_child", NEIGHBOURS_DIR_VAR, &path);

    let runtime = open_neighbours_store(&path).await;
    let client = runtime.client();
    let crasher = client.status("crasher").await.unwrap().unwrap();
    assert_eq!(crasher.runtime_status, RuntimeStatus::Failed);
    assert!(
        crasher
            .failure
            .unwrap()
            .to_string()
            .contains("max_activity_restarts"),
        "the crasher is failed by the guard"
    );
    // It was killed with the crasher twice, then ran isolated, alone, and finished.
    let neighbour = client.status("neighbour").await.unwrap().unwrap();
    assert_eq!(
        neighbour.runtime_status,
        RuntimeStatus::Completed,
        "{:?}",
        neighbour.failure
    );
    assert_eq!(
        neighbour.output,
        Some(durable_store::Json::encode(&5u64).unwrap())
    );
    assert_eq!(crashes, MAX_RESTARTS + 1, "runs that crashed");
    runtime.shutdown().await;
}

/// Marks that it runs (in the file `DURABLE_DEPLOY_JOB_MARK` names), then waits for its
/// cancellation — unless `DURABLE_DEPLOY_JOB_RELEASE` is set.
#[activity]
async fn deploy_job(ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    if std::env::var_os(DEPLOY_RELEASE_VAR).is_some() {
        return Ok(x);
    }
    if let Some(mark) = std::env::var_os(DEPLOY_MARK_VAR) {
        std::fs::write(mark, b"running")
            .map_err(|e| Error::new(ErrorKind::Application, e.to_string()))?;
    }
    ctx.cancelled().await;
    Err(Error::new(
        ErrorKind::Application,
        "stopped before it finished",
    ))
}

#[orchestrator]
async fn call_deploy_job(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(deploy_job, x).await
}

const DEPLOY_DIR_VAR: &str = "DURABLE_DEPLOY_DIR";
const DEPLOY_MARK_VAR: &str = "DURABLE_DEPLOY_JOB_MARK";
const DEPLOY_RELEASE_VAR: &str = "DURABLE_DEPLOY_JOB_RELEASE";

async fn open_deploy_store(dir: &str) -> Runtime {
    Runtime::builder()
        .store_path(dir)
        .max_activity_restarts(MAX_RESTARTS)
        .register(deploy_job)
        .register(call_deploy_job)
        .start()
        .await
        .unwrap()
}

/// The child: a service that starts the job once and runs until SIGTERM — or, once the
/// job is released, until the job is done.
#[test]
fn deploy_child() {
    let Some([dir]) = durable_testkit::child_env([DEPLOY_DIR_VAR]) else {
        return; // only meaningful as a child process
    };
    durable_testkit::block_on(async move {
        // SIGTERM is handled from here on (tokio keeps the handler once installed), so
        // one that arrives before `shutdown_on_signal` waits is not lost to the default.
        drop(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap());
        let runtime = open_deploy_store(&dir).await;
        let client = runtime.client();
        if client.status("deployed").await.unwrap().is_none() {
            client
                .start_with_id(call_deploy_job, "deployed", 3)
                .await
                .unwrap();
        }
        if std::env::var_os(DEPLOY_RELEASE_VAR).is_some() {
            client
                .wait_for_completion("deployed", Duration::from_secs(60))
                .await
                .unwrap();
            runtime.shutdown().await;
        } else {
            runtime.shutdown_on_signal().await.unwrap();
        }
    });
}

#[test]
fn a_deploy_loop_that_sends_sigterm_is_not_counted_against_a_running_activity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store").to_str().unwrap().to_owned();
    let mark = dir.path().join("running");
    // More deploys than the guard allows abrupt ends, each one while the job runs.
    for deploy in 0..(MAX_RESTARTS + 3) {
        let child = durable_testkit::spawn_test_child(
            "deploy_child",
            &[
                (DEPLOY_DIR_VAR, path.clone()),
                (DEPLOY_MARK_VAR, mark.to_str().unwrap().to_owned()),
            ],
        );
        let mut child = child;
        let running = durable_testkit::wait_until(durable_testkit::PATIENCE, || mark.exists());
        // Again until it exits: one that lands before the child waits for it is not seen.
        let mut exit = None;
        let stopped = durable_testkit::wait_until(durable_testkit::PATIENCE, || {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(20));
            exit = child.try_wait().unwrap();
            exit.is_some()
        });
        if !stopped {
            child.kill().unwrap();
        }
        assert!(running, "deploy {deploy}: the job did not start");
        assert!(stopped, "deploy {deploy}: SIGTERM did not stop the child");
        assert!(exit.unwrap().success(), "deploy {deploy}: {exit:?}");
        std::fs::remove_file(&mark).unwrap();
    }
    let exit = durable_testkit::spawn_test_child(
        "deploy_child",
        &[
            (DEPLOY_DIR_VAR, path.clone()),
            (DEPLOY_RELEASE_VAR, "1".to_owned()),
        ],
    )
    .wait()
    .unwrap();
    assert!(exit.success(), "{exit:?}");
    durable_testkit::block_on(async move {
        let runtime = open_deploy_store(&path).await;
        let status = runtime.client().status("deployed").await.unwrap().unwrap();
        assert_eq!(
            status.runtime_status,
            RuntimeStatus::Completed,
            "{:?}",
            status.failure
        );
        runtime.shutdown().await;
    });
}
