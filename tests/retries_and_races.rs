//! Retries, races and timeouts: one idempotency key for every attempt of a call, retry
//! policies that stop early, any orchestration future raced against a timer, activities
//! told to stop when nobody waits for them any more, and the typed corners around them
//! (events, `continue_as_new`, custom status, generations). Timers run on a manual clock:
//! no test waits for real time to pass.

use durable::prelude::*;
use durable::store::{HistoryEvent, MemoryStore, Store};
use durable::{Clock, Either, InstanceId};
use durable_testkit::eventually;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(60);

/// What the activities did, by instance.
static NOTES: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

fn note(ctx: &ActivityContext, what: String) {
    NOTES
        .lock()
        .unwrap()
        .entry(ctx.instance_id().to_string())
        .or_default()
        .push(what);
}

fn notes(instance: &str) -> Vec<String> {
    NOTES
        .lock()
        .unwrap()
        .get(instance)
        .cloned()
        .unwrap_or_default()
}

async fn until_noted(instance: &str, what: &str) {
    let waited = format!("{instance} to note {what:?}");
    eventually(&waited, async || {
        notes(instance).iter().any(|note| note == what)
    })
    .await;
}

/// Fails its first `failures` attempts, then succeeds; notes each attempt's key.
#[activity]
async fn flaky(ctx: ActivityContext, failures: u32) -> Result<String, Error> {
    note(
        &ctx,
        format!(
            "attempt {} task {} key {}",
            ctx.attempt(),
            ctx.task_id(),
            ctx.idempotency_key()
        ),
    );
    if ctx.attempt() <= failures {
        return Err(Error::msg("temporarily unavailable"));
    }
    Ok(ctx.idempotency_key())
}

/// Fails with an error of the kind its input names.
#[activity]
async fn refuses(ctx: ActivityContext, why: String) -> Result<(), Error> {
    note(&ctx, format!("attempt {}", ctx.attempt()));
    Err(match why.as_str() {
        "bad input" => Error::new(ErrorKind::Serialization, "the card number is malformed"),
        _ => Error::msg(why),
    })
}

/// Runs until it is cancelled (noting both), unless it is a retry.
#[activity]
async fn hangs(ctx: ActivityContext, label: String) -> Result<String, Error> {
    if ctx.attempt() > 1 {
        note(&ctx, format!("{label} attempt {} done", ctx.attempt()));
        return Ok(format!("{label} on attempt {}", ctx.attempt()));
    }
    note(&ctx, format!("{label} started"));
    ctx.cancelled().await;
    note(&ctx, format!("{label} cancelled"));
    Err(Error::msg("stopped: cancelled"))
}

#[activity]
async fn quick(ctx: ActivityContext, label: String) -> Result<String, Error> {
    note(&ctx, format!("{label} done"));
    Ok(label)
}

fn no_waits(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        first_interval: Duration::ZERO,
        ..RetryPolicy::default()
    }
}

#[orchestrator]
async fn pay(ctx: OrchestrationContext, failures: u32) -> Result<String, Error> {
    ctx.call_activity_with_retry(flaky, failures, no_waits(5))
        .await
}

#[orchestrator]
async fn refused(ctx: OrchestrationContext, why: String) -> Result<String, Error> {
    let policy = RetryPolicy {
        non_retryable: &[ErrorKind::Serialization],
        retry_if: Some(|error| {
            error
                .cause()
                .is_some_and(|cause| !cause.message().contains("declined"))
        }),
        ..no_waits(5)
    };
    match ctx.call_activity_with_retry(refuses, why, policy).await {
        Ok(()) => Ok("paid".to_owned()),
        Err(error) => Ok(error.to_string()),
    }
}

#[orchestrator]
async fn bounded(ctx: OrchestrationContext, label: String) -> Result<String, Error> {
    let policy = RetryPolicy {
        timeout: Some(Duration::from_secs(30)),
        ..no_waits(5)
    };
    match ctx.call_activity_with_retry(hangs, label, policy).await {
        Ok(output) => Ok(output),
        Err(error) => Ok(format!("{:?}: {error}", error.kind())),
    }
}

#[orchestrator]
async fn per_attempt(ctx: OrchestrationContext, label: String) -> Result<String, Error> {
    let policy = RetryPolicy {
        attempt_timeout: Some(Duration::from_secs(10)),
        ..no_waits(3)
    };
    ctx.call_activity_with_retry(hangs, label, policy).await
}

/// Two steps in sequence raced against a timer: the second hangs unless told otherwise.
#[orchestrator]
async fn two_steps(ctx: OrchestrationContext, second: String) -> Result<String, Error> {
    let steps = async {
        let first = ctx.call_activity(quick, "first".to_owned()).await?;
        let second = match second.as_str() {
            "hang" => ctx.call_activity(hangs, "second".to_owned()).await?,
            _ => ctx.call_activity(quick, "second".to_owned()).await?,
        };
        Ok::<_, Error>(format!("{first}+{second}"))
    };
    Ok(
        match ctx.select(steps, ctx.sleep(Duration::from_secs(60))).await {
            Either::Left(done) => done?,
            Either::Right(_) => "too slow".to_owned(),
        },
    )
}

/// A retried call raced against a timer.
#[orchestrator]
async fn retry_or_give_up(ctx: OrchestrationContext, failures: u32) -> Result<String, Error> {
    let retried = ctx.call_activity_with_retry(flaky, failures, no_waits(10));
    Ok(
        match ctx
            .select(retried, ctx.sleep(Duration::from_secs(60)))
            .await
        {
            Either::Left(result) => result?,
            Either::Right(_) => "gave up".to_owned(),
        },
    )
}

#[orchestrator]
async fn timed(ctx: OrchestrationContext, label: String) -> Result<String, Error> {
    let call = ctx.call_activity(hangs, label);
    match ctx.timeout(Duration::from_secs(5), call).await {
        Err(error) if error.kind() == ErrorKind::TimedOut => Ok("timed out".to_owned()),
        other => other,
    }
}

#[orchestrator]
async fn waits_on(ctx: OrchestrationContext, label: String) -> Result<String, Error> {
    ctx.call_activity(hangs, label).await
}

/// Fires an activity and forgets it, then waits.
#[orchestrator]
async fn fire_and_forget(ctx: OrchestrationContext) -> Result<(), Error> {
    drop(ctx.call_activity(quick, "forgotten".to_owned()));
    ctx.wait_for_event::<()>("done").await
}

fn start_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

struct Harness {
    runtime: Runtime,
    client: Client,
    clock: Clock,
    store: Arc<MemoryStore>,
}

async fn harness() -> Harness {
    let clock = Clock::manual(start_time());
    let store = Arc::new(MemoryStore::new());
    let runtime = Runtime::builder()
        .store(store.clone())
        .clock(clock.clone())
        .register(flaky)
        .register(refuses)
        .register(hangs)
        .register(quick)
        .register(pay)
        .register(refused)
        .register(bounded)
        .register(per_attempt)
        .register(two_steps)
        .register(retry_or_give_up)
        .register(timed)
        .register(waits_on)
        .register(fire_and_forget)
        .register(typed_events)
        .register(counts_generations)
        .register(continues_as_another)
        .register(bad_status)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    Harness {
        runtime,
        client,
        clock,
        store,
    }
}

impl Harness {
    fn history(&self, instance: &str) -> Vec<HistoryEvent> {
        let id = InstanceId::new(instance).unwrap();
        let record = self.store.instance(&id).unwrap().unwrap();
        self.store.history(&id, record.execution).unwrap()
    }

    /// Waits until the instance has stored `n` timers (it then waits on them).
    async fn until_timers(&self, instance: &str, n: usize) {
        let what = format!("{instance} to store {n} timers");
        eventually(&what, async || {
            let timers = self.store.scan_timers(None, 10_000).unwrap();
            timers
                .iter()
                .filter(|t| t.instance.as_str() == instance)
                .count()
                == n
        })
        .await;
    }
}

fn count(history: &[HistoryEvent], kind: &str) -> usize {
    history.iter().filter(|event| event.kind() == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_of_a_retried_call_has_the_same_idempotency_key() {
    let h = harness().await;
    let id = "pay-1";
    let handle = h.client.start_with_id(pay, id, 2).await.unwrap();
    let key = handle.wait(WAIT).await.unwrap();
    let record = h.store.instance(&InstanceId::new(id).unwrap()).unwrap();
    let execution = record.unwrap().execution;
    assert_eq!(
        key,
        format!("{id}:{execution}:0"),
        "the first attempt's task"
    );
    let attempts = notes(id);
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for (number, attempt) in attempts.iter().enumerate() {
        assert!(
            attempt.starts_with(&format!("attempt {} ", number + 1)),
            "{attempts:?}"
        );
        assert!(attempt.ends_with(&format!("key {key}")), "{attempts:?}");
    }
    // Each attempt is a task of its own, recorded as a retry of the first.
    let retries: Vec<_> = h
        .history(id)
        .into_iter()
        .filter_map(|event| match event {
            HistoryEvent::TaskScheduled { retry, .. } => Some(retry.map(|r| (r.first.0, r.number))),
            _ => None,
        })
        .collect();
    assert_eq!(retries, vec![None, Some((0, 2)), Some((0, 3))]);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_no_retry_can_fix_fail_the_call_at_once() {
    let h = harness().await;
    for (id, why, expected) in [
        ("refused-kind", "bad input", "the card number is malformed"),
        ("refused-predicate", "card declined", "card declined"),
        ("refused-retried", "flaky network", "flaky network"),
    ] {
        let handle = h
            .client
            .start_with_id(refused, id, why.to_owned())
            .await
            .unwrap();
        let message = handle.wait(WAIT).await.unwrap();
        assert!(message.contains(expected), "{id}: {message}");
        let attempts = notes(id).len();
        let wanted = if id == "refused-retried" { 5 } else { 1 };
        assert_eq!(attempts, wanted, "{id}: {:?}", notes(id));
    }
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_timeout_cancels_the_attempt_running_and_fails_the_call() {
    let h = harness().await;
    let id = "bounded-1";
    let handle = h
        .client
        .start_with_id(bounded, id, "slow".to_owned())
        .await
        .unwrap();
    until_noted(id, "slow started").await;
    h.until_timers(id, 1).await;
    h.clock.advance(Duration::from_secs(31));
    let output = handle.wait(WAIT).await.unwrap();
    assert!(output.starts_with("TimedOut: "), "{output}");
    until_noted(id, "slow cancelled").await;
    let history = h.history(id);
    assert_eq!(count(&history, "TaskCancelled"), 1);
    assert_eq!(
        count(&history, "TaskScheduled"),
        1,
        "no retry after the timeout"
    );
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_attempt_times_out_and_the_next_attempt_runs() {
    let h = harness().await;
    let id = "per-attempt-1";
    let handle = h
        .client
        .start_with_id(per_attempt, id, "job".to_owned())
        .await
        .unwrap();
    until_noted(id, "job started").await;
    h.until_timers(id, 1).await;
    h.clock.advance(Duration::from_secs(11));
    assert_eq!(handle.wait(WAIT).await.unwrap(), "job on attempt 2");
    until_noted(id, "job cancelled").await;
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_steps_in_sequence_race_a_timer_as_one() {
    let h = harness().await;
    let fast = h
        .client
        .start_with_id(two_steps, "steps-fast", "quick".to_owned())
        .await
        .unwrap();
    assert_eq!(fast.wait(WAIT).await.unwrap(), "first+second");
    let slow = h
        .client
        .start_with_id(two_steps, "steps-slow", "hang".to_owned())
        .await
        .unwrap();
    until_noted("steps-slow", "second started").await;
    h.clock.advance(Duration::from_secs(61));
    assert_eq!(slow.wait(WAIT).await.unwrap(), "too slow");
    until_noted("steps-slow", "second cancelled").await;
    assert_eq!(count(&h.history("steps-fast"), "TimerCancelled"), 1);
    assert_eq!(count(&h.history("steps-slow"), "TaskCancelled"), 1);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_call_can_be_raced() {
    let h = harness().await;
    let handle = h
        .client
        .start_with_id(retry_or_give_up, "raced-retry", 3)
        .await
        .unwrap();
    let key = handle.wait(WAIT).await.unwrap();
    assert!(key.starts_with("raced-retry:"), "{key}");
    assert_eq!(notes("raced-retry").len(), 4);
    assert_eq!(count(&h.history("raced-retry"), "TimerCancelled"), 1);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_cancels_what_it_gave_up_on() {
    let h = harness().await;
    let handle = h
        .client
        .start_with_id(timed, "timed-1", "render".to_owned())
        .await
        .unwrap();
    until_noted("timed-1", "render started").await;
    h.clock.advance(Duration::from_secs(6));
    assert_eq!(handle.wait(WAIT).await.unwrap(), "timed out");
    until_noted("timed-1", "render cancelled").await;
    // The cancelled run's result is not recorded: the task stays cancelled.
    let history = h.history("timed-1");
    assert_eq!(count(&history, "TaskCancelled"), 1);
    assert_eq!(count(&history, "TaskFailed"), 0);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_tells_a_running_activity_to_stop() {
    let h = harness().await;
    h.client
        .start_with_id(waits_on, "terminated-1", "export".to_owned())
        .await
        .unwrap();
    until_noted("terminated-1", "export started").await;
    h.client.terminate("terminated-1", "enough").await.unwrap();
    until_noted("terminated-1", "export cancelled").await;
    let status = h
        .client
        .wait_for_completion("terminated-1", WAIT)
        .await
        .unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Terminated);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_activity_task_is_fire_and_forget() {
    let h = harness().await;
    h.client
        .start_with_id(fire_and_forget, "forget-1", ())
        .await
        .unwrap();
    until_noted("forget-1", "forgotten done").await;
    h.client.raise_event("forget-1", "done", ()).await.unwrap();
    let status = h
        .client
        .wait_for_completion("forget-1", WAIT)
        .await
        .unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Completed);
    assert_eq!(count(&h.history("forget-1"), "TaskCancelled"), 0);
    h.runtime.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Shutdown cancels too, and a run it cancelled runs again at the next start.

static SHUTDOWN_RUNS: AtomicU32 = AtomicU32::new(0);

#[activity]
async fn long_export(ctx: ActivityContext) -> Result<String, Error> {
    if SHUTDOWN_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        note(&ctx, "first run started".to_owned());
        ctx.cancelled().await;
        note(&ctx, "first run cancelled".to_owned());
        return Err(Error::msg("stopped by shutdown"));
    }
    Ok("exported".to_owned())
}

#[orchestrator]
async fn export(ctx: OrchestrationContext) -> Result<String, Error> {
    ctx.call_activity(long_export, ()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_running_activities_and_they_run_again_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Runtime::builder()
            .store_path(dir.path())
            .register(long_export)
            .register(export)
            .start()
    };
    let runtime = start().await.unwrap();
    runtime
        .client()
        .start_with_id(export, "export-1", ())
        .await
        .unwrap();
    until_noted("export-1", "first run started").await;
    runtime.shutdown().await; // returns without waiting out the shutdown timeout
    assert!(notes("export-1").contains(&"first run cancelled".to_owned()));
    let runtime = start().await.unwrap();
    let status = runtime
        .client()
        .wait_for_completion("export-1", WAIT)
        .await
        .unwrap();
    assert_eq!(
        status.output_as::<String>().unwrap().as_deref(),
        Some("exported")
    );
    assert_eq!(SHUTDOWN_RUNS.load(Ordering::SeqCst), 2);
    runtime.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Typed corners.

/// Declared once, used by both sides.
const APPROVAL: durable::ExternalEvent<bool> = durable::ExternalEvent::new("Approval");

#[orchestrator]
async fn typed_events(ctx: OrchestrationContext) -> Result<String, Error> {
    let approved = ctx.wait_for_event(APPROVAL).await?;
    Ok(if approved { "approved" } else { "rejected" }.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_event_reaches_its_waiter() {
    let h = harness().await;
    let handle = h
        .client
        .start_with_id(typed_events, "typed-1", ())
        .await
        .unwrap();
    h.client
        .raise_event("typed-1", APPROVAL, true)
        .await
        .unwrap();
    assert_eq!(handle.wait(WAIT).await.unwrap(), "approved");
    // Other programs raise it by name.
    let handle = h
        .client
        .start_with_id(typed_events, "typed-2", ())
        .await
        .unwrap();
    h.client
        .raise_event("typed-2", APPROVAL.name(), false)
        .await
        .unwrap();
    assert_eq!(handle.wait(WAIT).await.unwrap(), "rejected");
    h.runtime.shutdown().await;
}

#[orchestrator]
async fn counts_generations(ctx: OrchestrationContext, seen: Vec<u32>) -> Result<Vec<u32>, Error> {
    let mut seen = seen;
    seen.push(ctx.generation());
    if seen.len() == 4 {
        return Ok(seen);
    }
    ctx.continue_as_new(counts_generations, seen).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generation_counts_executions_of_one_start() {
    let h = harness().await;
    let handle = h
        .client
        .start_with_id(counts_generations, "generations", Vec::new())
        .await
        .unwrap();
    assert_eq!(handle.wait(WAIT).await.unwrap(), vec![1, 2, 3, 4]);
    // Starting the ended id again is a new start.
    let handle = h
        .client
        .start_with_id(counts_generations, "generations", vec![0, 0, 0])
        .await
        .unwrap();
    assert_eq!(handle.wait(WAIT).await.unwrap(), vec![0, 0, 0, 1]);
    h.runtime.shutdown().await;
}

#[orchestrator]
async fn continues_as_another(ctx: OrchestrationContext) -> Result<Vec<u32>, Error> {
    ctx.continue_as_new(counts_generations, Vec::new()).await
}

#[orchestrator]
async fn bad_status(ctx: OrchestrationContext) -> Result<(), Error> {
    // A map with non-string keys has no JSON form.
    let status: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    ctx.set_custom_status(status)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_in_typed_corners_fail_the_instance_saying_why() {
    let h = harness().await;
    for (id, expected) in [
        (
            "another",
            "continue_as_new names orchestrator `counts_generations`, but this instance runs `continues_as_another`",
        ),
        (
            "bad-status",
            "the custom status cannot be serialized to JSON",
        ),
    ] {
        match id {
            "another" => drop(
                h.client
                    .start_with_id(continues_as_another, id, ())
                    .await
                    .unwrap(),
            ),
            _ => drop(h.client.start_with_id(bad_status, id, ()).await.unwrap()),
        }
        let status = h.client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(status.runtime_status, RuntimeStatus::Failed, "{id}");
        let failure = status.failure.unwrap();
        assert!(
            failure.message.contains(expected),
            "{id}: {}",
            failure.message
        );
    }
    h.runtime.shutdown().await;
}
