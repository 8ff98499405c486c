//! Orchestration semantics over the in-memory store: chaining, fan-out/fan-in,
//! sub-orchestrations, retries, continue-as-new, errors and panics, instance ids,
//! termination, listing and purging.

use durable::client::Error as ClientError;
use durable::prelude::*;
use durable::store::{MemoryStore, Store};
use durable::{InstanceQuery, RuntimeBuilder};
use durable_testkit::{eventually, poll_once};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let a = ctx.call_activity(add_one, x).await?;
    let b = ctx.call_activity(add_one, a).await?;
    Ok(b)
}

#[orchestrator]
async fn fan(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
    let tasks: Vec<_> = (0..n).map(|i| ctx.call_activity(add_one, i)).collect();
    let outs = ctx.join_all(tasks).await?;
    Ok(outs.into_iter().sum())
}

#[orchestrator]
async fn parent(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let a = ctx.call_sub_orchestrator(chain, x).await?;
    ctx.call_sub_orchestrator_with_id(chain, format!("{}-child", ctx.instance_id()), a)
        .await
}

#[orchestrator]
async fn parent_of_failure(ctx: OrchestrationContext, _input: ()) -> Result<String, Error> {
    match ctx.call_sub_orchestrator(unhandled, ()).await {
        Ok(()) => Ok("no error".to_owned()),
        Err(error) => Ok(format!("{:?}: {error}", error.kind())),
    }
}

static FLAKY_ATTEMPTS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

#[activity]
async fn flaky(_ctx: ActivityContext, key: String) -> Result<u32, Error> {
    let attempt = {
        let mut attempts = FLAKY_ATTEMPTS.lock().unwrap();
        let attempt = attempts.entry(key).or_default();
        *attempt += 1;
        *attempt
    };
    if attempt < 3 {
        return Err(Error::msg(format!("attempt {attempt} failed")));
    }
    Ok(attempt)
}

#[orchestrator]
async fn retrying(ctx: OrchestrationContext, key: String) -> Result<u32, Error> {
    let policy = RetryPolicy {
        max_attempts: 5,
        first_interval: Duration::from_millis(1),
        backoff_coefficient: 1.0,
        ..RetryPolicy::default()
    };
    ctx.call_activity_with_retry(flaky, key, policy).await
}

#[orchestrator]
async fn retry_exhausted(ctx: OrchestrationContext, _input: ()) -> Result<(), Error> {
    let policy = RetryPolicy::new(2, Duration::from_millis(1));
    ctx.call_activity_with_retry(fail_always, "always".to_owned(), policy)
        .await
}

/// Counts down by continuing as new; returns how many executions ran, counted in its input.
/// The first execution waits for a "go" event, so that a test can read its id before the
/// instance moves on.
#[orchestrator]
async fn countdown(ctx: OrchestrationContext, (left, done): (u64, u64)) -> Result<u64, Error> {
    if done == 0 {
        ctx.wait_for_event::<()>("go").await?;
    }
    if left == 0 {
        return Ok(done + 1);
    }
    ctx.call_activity(add_one, left).await?;
    ctx.continue_as_new(countdown, (left - 1, done + 1)).await
}

#[activity]
async fn fail_always(_ctx: ActivityContext, message: String) -> Result<(), Error> {
    Err(Error::msg(message))
}

#[orchestrator]
async fn compensating(ctx: OrchestrationContext, _input: ()) -> Result<String, Error> {
    match ctx
        .call_activity(fail_always, "card declined".to_owned())
        .await
    {
        Ok(()) => Ok("charged".to_owned()),
        Err(error) => {
            let refund = ctx.call_activity(add_one, 41).await?;
            Ok(format!("compensated with {refund} after: {error}"))
        }
    }
}

#[orchestrator]
async fn unhandled(ctx: OrchestrationContext, _input: ()) -> Result<(), Error> {
    ctx.call_activity(fail_always, "disk full".to_owned()).await
}

#[activity]
async fn exploding(_ctx: ActivityContext, _input: ()) -> Result<(), Error> {
    panic!("activity exploded")
}

#[orchestrator]
async fn calls_exploding(ctx: OrchestrationContext, _input: ()) -> Result<(), Error> {
    ctx.call_activity(exploding, ()).await
}

#[orchestrator]
async fn panicking(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let a = ctx.call_activity(add_one, x).await?;
    if a > 0 {
        panic!("orchestrator exploded at {a}");
    }
    Ok(a)
}

#[orchestrator]
async fn sleeper(ctx: OrchestrationContext, seconds: u64) -> Result<(), Error> {
    ctx.sleep(Duration::from_secs(seconds)).await?;
    Ok(())
}

#[orchestrator]
async fn unit_result(ctx: OrchestrationContext) -> Result<String, Error> {
    Ok(format!("hello from {}", ctx.instance_id()))
}

async fn status_history(client: &Client, id: &str) -> Vec<durable::store::HistoryEvent> {
    client
        .status_with_history(id)
        .await
        .unwrap()
        .unwrap()
        .history
        .unwrap()
}

fn builder() -> RuntimeBuilder {
    Runtime::builder()
        .register(add_one)
        .register(chain)
        .register(fan)
        .register(parent)
        .register(parent_of_failure)
        .register(flaky)
        .register(retrying)
        .register(retry_exhausted)
        .register(countdown)
        .register(fail_always)
        .register(compensating)
        .register(unhandled)
        .register(exploding)
        .register(calls_exploding)
        .register(panicking)
        .register(sleeper)
        .register(unit_result)
}

async fn runtime() -> Runtime {
    durable_testkit::test_store(builder())
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn chaining_passes_each_output_on() {
    let runtime = runtime().await;
    let instance = runtime.client().start(chain, 1).await.unwrap();
    let out: u64 = instance.wait(WAIT).await.unwrap();
    assert_eq!(out, 3);
    let status = instance.status().await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Completed);
    assert_eq!(status.name, "chain");
    assert_eq!(status.input.decode::<u64>().unwrap(), 1);
    runtime.shutdown().await;
}

#[tokio::test]
async fn orchestrator_without_input_takes_unit() {
    let runtime = runtime().await;
    let client = runtime.client();
    let instance = client
        .start_with_id(unit_result, "unit-1", ())
        .await
        .unwrap();
    assert_eq!(instance.wait(WAIT).await.unwrap(), "hello from unit-1");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_of_100_and_1000() {
    let runtime = runtime().await;
    let client = runtime.client();
    let hundred = client.start(fan, 100).await.unwrap();
    let thousand = client.start(fan, 1000).await.unwrap();
    assert_eq!(hundred.wait(WAIT).await.unwrap(), (1..=100).sum::<u64>());
    assert_eq!(thousand.wait(WAIT).await.unwrap(), (1..=1000).sum::<u64>());
    assert!(runtime.metrics().activities_completed >= 1100);
    runtime.shutdown().await;
}

#[tokio::test]
async fn sub_orchestrations_return_their_output_to_the_parent() {
    let runtime = runtime().await;
    let client = runtime.client();
    let instance = client.start_with_id(parent, "family", 1).await.unwrap();
    assert_eq!(instance.wait(WAIT).await.unwrap(), 5);
    let child = client.status("family-child").await.unwrap().unwrap();
    assert_eq!(child.runtime_status, RuntimeStatus::Completed);
    assert_eq!(child.parent.as_ref().map(|p| p.as_str()), Some("family"));
    assert_eq!(child.output_as::<u64>().unwrap(), Some(5));
    let first_child = client.status("family:1:0").await.unwrap().unwrap();
    assert_eq!(first_child.output_as::<u64>().unwrap(), Some(3));
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_failed_sub_orchestration_is_an_error_in_the_parent() {
    let runtime = runtime().await;
    let instance = runtime.client().start(parent_of_failure, ()).await.unwrap();
    let out = instance.wait(WAIT).await.unwrap();
    assert!(out.starts_with("SubOrchestrationFailed"), "{out}");
    assert!(out.contains("disk full"), "{out}");
    runtime.shutdown().await;
}

#[tokio::test]
async fn retry_succeeds_on_the_third_attempt() {
    let runtime = runtime().await;
    let instance = runtime
        .client()
        .start(retrying, "third-time-lucky".to_owned())
        .await
        .unwrap();
    assert_eq!(instance.wait(WAIT).await.unwrap(), 3);
    assert_eq!(FLAKY_ATTEMPTS.lock().unwrap()["third-time-lucky"], 3);
    let history = status_history(&runtime.client(), instance.id().as_str()).await;
    let timers = history
        .iter()
        .filter(|e| matches!(e, durable::store::HistoryEvent::TimerFired { .. }))
        .count();
    assert_eq!(timers, 2, "two durable waits between three attempts");
    runtime.shutdown().await;
}

#[tokio::test]
async fn retry_gives_up_with_the_last_error() {
    let runtime = runtime().await;
    let instance = runtime.client().start(retry_exhausted, ()).await.unwrap();
    let Err(ClientError::Failed { failure, .. }) = instance.wait(WAIT).await else {
        panic!("expected a failure")
    };
    assert_eq!(failure.to_string(), "activity `fail_always` failed: always");
    runtime.shutdown().await;
}

#[tokio::test]
async fn continue_as_new_a_hundred_times() {
    let runtime = runtime().await;
    let client = runtime.client();
    let instance = client
        .start_with_id(countdown, "eternal", (100, 0))
        .await
        .unwrap();
    // The first execution waits for "go": its id cannot have moved on yet.
    let first = instance.status().await.unwrap();
    assert_eq!(first.input.decode::<(u64, u64)>().unwrap(), (100, 0));
    let first = first.execution;
    client.raise_event("eternal", "go", ()).await.unwrap();
    assert_eq!(
        instance.wait(WAIT).await.unwrap(),
        101,
        "the 101st execution returned"
    );
    let status = client
        .status_with_history("eternal")
        .await
        .unwrap()
        .unwrap();
    // Execution ids are unique in the store and increasing (not numbered per instance):
    // each of the 100 continuations took a new one.
    assert!(
        status.execution.0 >= first.0 + 100,
        "each execution has a new id: the first {first:?}, the last {:?}",
        status.execution
    );
    assert_eq!(status.input.decode::<(u64, u64)>().unwrap(), (0, 100));
    let history = status.history.unwrap();
    assert!(
        history.len() <= 4,
        "only the last execution's history is kept: {history:?}"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_activity_error_can_be_caught_and_compensated() {
    let runtime = runtime().await;
    let instance = runtime.client().start(compensating, ()).await.unwrap();
    assert_eq!(
        instance.wait(WAIT).await.unwrap(),
        "compensated with 42 after: activity `fail_always` failed: card declined"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_unhandled_error_fails_the_instance_with_its_message() {
    let runtime = runtime().await;
    let client = runtime.client();
    let instance = client.start(unhandled, ()).await.unwrap();
    let error = instance.wait(WAIT).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("activity `fail_always` failed: disk full"),
        "{error}"
    );
    let status = instance.status().await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, ErrorKind::ActivityFailed);
    assert_eq!(failure.cause.unwrap().message, "disk full");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_fail_only_their_own_instance() {
    let runtime = runtime().await;
    let client = runtime.client();
    let bad_activity = client.start(calls_exploding, ()).await.unwrap();
    let bad_orchestrator = client.start(panicking, 1).await.unwrap();
    let mut good = Vec::new();
    for i in 0..20 {
        good.push(client.start(chain, i).await.unwrap());
    }
    let error = bad_activity.wait(WAIT).await.unwrap_err().to_string();
    assert!(error.contains("activity exploded"), "{error}");
    let Err(ClientError::Failed { failure, .. }) = bad_orchestrator.wait(WAIT).await else {
        panic!("the panicking orchestrator did not fail")
    };
    assert_eq!(failure.kind, ErrorKind::Panic);
    assert!(
        failure.message.contains("orchestrator exploded at 2"),
        "{failure}"
    );
    for (i, instance) in good.iter().enumerate() {
        assert_eq!(instance.wait(WAIT).await.unwrap(), i as u64 + 2);
    }
    // The runtime still takes new work.
    let after = client.start(chain, 100).await.unwrap();
    assert_eq!(after.wait(WAIT).await.unwrap(), 102);
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_running_id_cannot_be_started_twice_but_an_ended_one_can() {
    let runtime = runtime().await;
    let client = runtime.client();
    let sleepy = client.start_with_id(sleeper, "sleepy", 3600).await.unwrap();
    let first_execution = sleepy.status().await.unwrap().execution;
    let Err(error) = client.start_with_id(sleeper, "sleepy", 1).await else {
        panic!("started a running id twice")
    };
    assert!(
        matches!(
            error,
            ClientError::AlreadyExists {
                status: RuntimeStatus::Running,
                ..
            }
        ),
        "{error:?}"
    );
    client.terminate("sleepy", "make room").await.unwrap();
    let again = client.start_with_id(chain, "sleepy", 7).await.unwrap();
    assert_eq!(again.wait(WAIT).await.unwrap(), 9);
    let status = again.status().await.unwrap();
    assert!(
        status.execution > first_execution,
        "a new execution of the ended id"
    );
    assert_eq!(status.name, "chain");
    runtime.shutdown().await;
}

#[tokio::test]
async fn terminate_ends_a_waiting_instance_and_cancels_its_timer() {
    let store = Arc::new(MemoryStore::new());
    let runtime = builder().store(store.clone()).start().await.unwrap();
    let client = runtime.client();
    let instance = client
        .start_with_id(sleeper, "to-stop", 3600)
        .await
        .unwrap();
    assert_eq!(store.scan_timers(None, 10).unwrap().len(), 1);
    client
        .terminate("to-stop", "no longer needed")
        .await
        .unwrap();
    let Err(ClientError::Terminated { reason, .. }) = instance.wait(WAIT).await else {
        panic!("not terminated")
    };
    assert_eq!(reason, "no longer needed");
    assert!(
        store.scan_timers(None, 10).unwrap().is_empty(),
        "the timer was deleted"
    );
    let again = client.terminate("to-stop", "twice").await.unwrap_err();
    assert!(
        matches!(
            again,
            ClientError::NotRunning {
                status: RuntimeStatus::Terminated,
                ..
            }
        ),
        "{again:?}"
    );
    let unknown = client.terminate("nobody", "x").await.unwrap_err();
    assert!(
        matches!(unknown, ClientError::NotFound { .. }),
        "{unknown:?}"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn waiting_times_out_and_unknown_ids_are_not_found() {
    let runtime = runtime().await;
    let client = runtime.client();
    client.start_with_id(sleeper, "long", 3600).await.unwrap();
    let error = client
        .wait_for_completion("long", Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    assert!(client.status("ghost").await.unwrap().is_none());
    let error = client.wait_for_completion("ghost", WAIT).await.unwrap_err();
    assert!(matches!(error, ClientError::NotFound { .. }), "{error:?}");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_filters_and_purges() {
    let runtime = runtime().await;
    let client = runtime.client();
    let mut handles = Vec::new();
    for i in 0..120u64 {
        handles.push(
            client
                .start_with_id(chain, format!("job-{i:03}"), i)
                .await
                .unwrap(),
        );
    }
    for handle in &handles {
        handle.wait(WAIT).await.unwrap();
    }
    client
        .start_with_id(sleeper, "job-running", 3600)
        .await
        .unwrap();

    let all = InstanceQuery::default();
    let mut seen = Vec::new();
    let mut continuation = None;
    loop {
        let page = client
            .list(&all, 50, continuation.as_deref())
            .await
            .unwrap();
        assert!(page.instances.len() <= 50);
        seen.extend(
            page.instances
                .into_iter()
                .map(|s| s.instance_id.to_string()),
        );
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 121);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 121, "no duplicates across pages");

    let running = InstanceQuery {
        statuses: Some(vec![RuntimeStatus::Running]),
        ..InstanceQuery::default()
    };
    let page = client.list(&running, 100, None).await.unwrap();
    assert_eq!(page.instances.len(), 1);
    assert_eq!(page.instances[0].instance_id.as_str(), "job-running");

    let error = client
        .list(&all, 10, Some("not-a-token"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::InvalidContinuation),
        "{error:?}"
    );

    client.purge("job-000").await.unwrap();
    assert!(client.status("job-000").await.unwrap().is_none());
    let error = client.purge("job-running").await.unwrap_err();
    assert!(matches!(error, ClientError::NotEnded { .. }), "{error:?}");
    let error = client.purge("job-000").await.unwrap_err();
    assert!(matches!(error, ClientError::NotFound { .. }), "{error:?}");

    let purged = client
        .purge_where(&InstanceQuery {
            id_prefix: Some("job-0".to_owned()),
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(purged, 99, "job-001 ..= job-099");
    let left = client.list(&all, 1000, None).await.unwrap().instances;
    assert_eq!(left.len(), 21, "job-100 ..= job-119 and the running one");
    runtime.shutdown().await;
}

#[tokio::test]
async fn concurrent_starts_all_complete_exactly_once() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    #[activity]
    async fn counted(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(x * 2)
    }
    #[orchestrator]
    async fn doubled(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
        ctx.call_activity(counted, x).await
    }
    let runtime = durable_testkit::test_store(Runtime::builder())
        .register(counted)
        .register(doubled)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let instance = client.start(doubled, i).await.unwrap();
            instance.wait(WAIT).await.unwrap()
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 2 * (0..500u64).sum::<u64>());
    assert_eq!(RUNS.load(Ordering::SeqCst), 500);
    runtime.shutdown().await;
}

#[orchestrator]
async fn spin(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
    // Continues as new at once, forever: only a terminate ends it.
    ctx.continue_as_new(spin, n + 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_stops_an_instance_that_continues_as_new_in_a_tight_loop() {
    let runtime = durable_testkit::test_store(Runtime::builder())
        .register(spin)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let instance = client.start_with_id(spin, "spinner", 0).await.unwrap();
    // Let it spin through some executions, then stop it wherever it is.
    eventually("the instance to continue as new 20 times", async || {
        runtime.metrics().instances_ended > 20
    })
    .await;
    client.terminate("spinner", "stop spinning").await.unwrap();
    let status = client.wait_for_completion("spinner", WAIT).await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Terminated);
    assert!(status.execution.0 > 20, "{:?}", status.execution);
    let history = status_history(&client, "spinner").await;
    assert!(history.len() <= 4, "one short execution: {history:?}");
    assert!(matches!(
        instance.wait(WAIT).await,
        Err(ClientError::Terminated { .. })
    ));
    runtime.shutdown().await;
}

static FIRE_AND_FORGET_RUNS: AtomicU64 = AtomicU64::new(0);

#[activity]
async fn send_email(_ctx: ActivityContext, to: String) -> Result<(), Error> {
    let _ = to;
    FIRE_AND_FORGET_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[orchestrator]
async fn notify_and_return(ctx: OrchestrationContext, to: String) -> Result<String, Error> {
    // Not awaited: fire-and-forget, as in Durable Functions.
    let _email = ctx.call_activity(send_email, to);
    Ok("done".to_owned())
}

#[tokio::test]
async fn an_activity_scheduled_in_the_last_turn_still_runs_once() {
    let store = Arc::new(MemoryStore::new());
    let runtime = Runtime::builder()
        .store(store.clone())
        .register(send_email)
        .register(notify_and_return)
        .start()
        .await
        .unwrap();
    let instance = runtime
        .client()
        .start(notify_and_return, "ops@example.com".to_owned())
        .await
        .unwrap();
    assert_eq!(instance.wait(WAIT).await.unwrap(), "done");
    eventually(
        "the activity to run once and its work item to be deleted",
        async || {
            FIRE_AND_FORGET_RUNS.load(Ordering::SeqCst) == 1
                && store.scan_activities(None, 10).unwrap().is_empty()
        },
    )
    .await;
    runtime.shutdown().await;
    assert_eq!(FIRE_AND_FORGET_RUNS.load(Ordering::SeqCst), 1);
}

/// A helper the `#[orchestrator]` check cannot see into.
async fn wait_a_bit() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[orchestrator]
async fn sneaky(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = ctx.instance_id();
    wait_a_bit().await;
    Ok(())
}

#[tokio::test]
async fn tokio_reached_through_a_helper_fails_the_instance_with_advice() {
    let runtime = durable_testkit::test_store(Runtime::builder())
        .register(sneaky)
        .register(chain)
        .register(add_one)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let instance = client.start(sneaky, ()).await.unwrap();
    let Err(ClientError::Failed { failure, .. }) = instance.wait(WAIT).await else {
        panic!("the orchestrator slept on tokio's timer instead of failing")
    };
    assert_eq!(failure.kind, ErrorKind::Panic);
    assert!(
        failure.message.contains("outside any tokio runtime"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("ctx.sleep"), "{}", failure.message);
    // The history says the same.
    let history = status_history(&client, instance.id().as_str()).await;
    assert!(matches!(
        history.last(),
        Some(durable::store::HistoryEvent::ExecutionFailed { failure }) if failure.message.contains("ctx.sleep")
    ));
    // And the runtime is fine.
    let ok = client.start(chain, 1).await.unwrap();
    assert_eq!(ok.wait(WAIT).await.unwrap(), 3);
    runtime.shutdown().await;
}

static STALE_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static FRESH_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

#[activity]
async fn slow_stale(_ctx: ActivityContext) -> Result<String, Error> {
    let _permit = STALE_GATE.acquire().await?;
    Ok("STALE result of the purged execution".to_owned())
}

#[activity]
async fn fresh(_ctx: ActivityContext) -> Result<String, Error> {
    let _permit = FRESH_GATE.acquire().await?;
    Ok("fresh".to_owned())
}

#[orchestrator]
async fn leaves_work_behind(ctx: OrchestrationContext, leave: bool) -> Result<String, Error> {
    if leave {
        // Fire-and-forget: still running when the instance is purged.
        drop(ctx.call_activity(slow_stale, ()));
        return Ok("left".to_owned());
    }
    ctx.call_activity(fresh, ()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_and_restarted_id_never_receives_results_of_its_old_executions() {
    let store = Arc::new(MemoryStore::new());
    let runtime = Runtime::builder()
        .store(store.clone())
        .register(slow_stale)
        .register(fresh)
        .register(leaves_work_behind)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let first = client
        .start_with_id(leaves_work_behind, "reused", true)
        .await
        .unwrap();
    assert_eq!(first.wait(WAIT).await.unwrap(), "left");
    let old_execution = first.status().await.unwrap().execution;
    client.purge("reused").await.unwrap();
    let second = client
        .start_with_id(leaves_work_behind, "reused", false)
        .await
        .unwrap();
    assert_ne!(second.status().await.unwrap().execution, old_execution);
    // The old activity finishes first, while the new execution waits on its own task 0;
    // its result is dropped (its work item deleted) and never reaches the new execution.
    STALE_GATE.add_permits(1);
    // A purge leaves activity work items alone: this one goes only once its result came
    // back and was dropped.
    eventually("the stale activity's result to be dropped", async || {
        store
            .scan_activities(None, 10)
            .unwrap()
            .iter()
            .all(|item| item.execution != old_execution)
    })
    .await;
    FRESH_GATE.add_permits(1);
    assert_eq!(second.wait(WAIT).await.unwrap(), "fresh");
    runtime.shutdown().await;
}

#[tokio::test]
async fn waiting_forever_is_allowed() {
    let runtime = runtime().await;
    let instance = runtime.client().start(chain, 1).await.unwrap();
    assert_eq!(instance.wait(Duration::MAX).await.unwrap(), 3);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_released_by_shutdown() {
    let runtime = runtime().await;
    let client = runtime.client();
    client
        .start_with_id(sleeper, "long-nap", 3600)
        .await
        .unwrap();
    let mut waiter = Box::pin({
        let client = client.clone();
        async move { client.wait_for_completion("long-nap", Duration::MAX).await }
    });
    // Its first poll registers it as a waiter; then the runtime stops under it.
    assert!(poll_once(&mut waiter).await.is_pending());
    let waiter = tokio::spawn(waiter);
    runtime.shutdown().await;
    let outcome = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the waiter was not released")
        .unwrap();
    assert!(
        matches!(outcome, Err(ClientError::ShuttingDown)),
        "{outcome:?}"
    );
}
