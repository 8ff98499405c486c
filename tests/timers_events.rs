//! Durable timers, external events, select, suspend/resume and scheduled starts, on a
//! manual clock: no test waits for real time to pass.

use durable::client::Error as ClientError;
use durable::prelude::*;
use durable::store::{HistoryEvent, MemoryStore, Store};
use durable::{Clock, Either, InstanceId};
use durable_testkit::eventually;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ApprovalEvent {
    approved: bool,
    by: String,
}

/// What the activities did, by instance: the side effects the tests check.
static EFFECTS: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

fn effects(instance: &str) -> Vec<String> {
    EFFECTS
        .lock()
        .unwrap()
        .get(instance)
        .cloned()
        .unwrap_or_default()
}

fn record(ctx: &ActivityContext, what: String) {
    EFFECTS
        .lock()
        .unwrap()
        .entry(ctx.instance_id().to_string())
        .or_default()
        .push(what);
}

#[activity]
async fn request_approval(ctx: ActivityContext) -> Result<(), Error> {
    record(&ctx, "requested".to_owned());
    Ok(())
}

#[activity]
async fn process_approval(ctx: ActivityContext, event: ApprovalEvent) -> Result<(), Error> {
    record(&ctx, format!("processed {}", event.by));
    Ok(())
}

#[activity]
async fn escalate(ctx: ActivityContext) -> Result<(), Error> {
    record(&ctx, "escalated".to_owned());
    Ok(())
}

/// Pattern 5: approval, or escalation after a timeout.
#[orchestrator]
async fn approval_workflow(ctx: OrchestrationContext, timeout: Duration) -> Result<String, Error> {
    ctx.call_activity(request_approval, ()).await?;
    let approval = ctx.wait_for_event::<ApprovalEvent>("ApprovalEvent");
    let deadline = ctx.sleep(timeout);
    match ctx.select(approval, deadline).await {
        Either::Left(event) => {
            let event = event?;
            ctx.call_activity(process_approval, event).await?;
            Ok("approved".to_owned())
        }
        Either::Right(fired) => {
            fired?;
            ctx.call_activity(escalate, ()).await?;
            Ok("escalated".to_owned())
        }
    }
}

#[orchestrator]
async fn collect(ctx: OrchestrationContext, count: usize) -> Result<Vec<String>, Error> {
    let mut got = Vec::new();
    for _ in 0..count {
        got.push(ctx.wait_for_event::<String>("item").await?);
    }
    Ok(got)
}

#[orchestrator]
async fn nap(ctx: OrchestrationContext, seconds: u64) -> Result<u64, Error> {
    ctx.sleep(Duration::from_secs(seconds)).await?;
    Ok(seconds)
}

#[orchestrator]
async fn nap_then_collect(ctx: OrchestrationContext) -> Result<Vec<String>, Error> {
    ctx.sleep(HOUR).await?;
    let first = ctx.wait_for_event::<String>("item").await?;
    Ok(vec![first])
}

#[orchestrator]
async fn status_reporter(ctx: OrchestrationContext) -> Result<(), Error> {
    ctx.set_custom_status(serde_json::json!({ "stage": "waiting" }))?;
    ctx.wait_for_event::<()>("go").await?;
    ctx.set_custom_status(serde_json::json!({ "stage": "done" }))?;
    Ok(())
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
    harness_with(|builder| builder).await
}

async fn harness_with(
    configure: impl FnOnce(durable::RuntimeBuilder) -> durable::RuntimeBuilder,
) -> Harness {
    let clock = Clock::manual(start_time());
    let store = Arc::new(MemoryStore::new());
    let builder = Runtime::builder()
        .store(store.clone())
        .clock(clock.clone())
        .register(request_approval)
        .register(process_approval)
        .register(escalate)
        .register(approval_workflow)
        .register(collect)
        .register(nap)
        .register(nap_then_collect)
        .register(status_reporter);
    let runtime = configure(builder).start().await.unwrap();
    let client = runtime.client();
    Harness {
        runtime,
        client,
        clock,
        store,
    }
}

impl Harness {
    fn timers_of(&self, instance: &str) -> usize {
        self.store
            .scan_timers(None, 100_000)
            .unwrap()
            .iter()
            .filter(|timer| timer.instance.as_str() == instance)
            .count()
    }

    fn history(&self, instance: &str) -> Vec<HistoryEvent> {
        let id = InstanceId::new(instance).unwrap();
        let record = self.store.instance(&id).unwrap().unwrap();
        self.store.history(&id, record.execution).unwrap()
    }

    /// Waits until the instance has stored its timer (it is then waiting on it).
    async fn until_waiting_on_timer(&self, instance: &str) {
        let what = format!("{instance} to wait on its timer");
        eventually(&what, async || self.timers_of(instance) == 1).await;
    }
}

fn count(history: &[HistoryEvent], kind: &str) -> usize {
    history.iter().filter(|event| event.kind() == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_first_processes_it_and_the_timer_never_fires() {
    let h = harness().await;
    let instance = h
        .client
        .start_with_id(approval_workflow, "approve-first", 72 * HOUR)
        .await
        .unwrap();
    h.until_waiting_on_timer("approve-first").await;
    let event = ApprovalEvent {
        approved: true,
        by: "ana".to_owned(),
    };
    h.client
        .raise_event("approve-first", "ApprovalEvent", event)
        .await
        .unwrap();
    assert_eq!(instance.wait(WAIT).await.unwrap(), "approved");
    assert_eq!(effects("approve-first"), vec!["requested", "processed ana"]);
    assert_eq!(h.timers_of("approve-first"), 0, "the timer was deleted");

    // Three days later the timer does not fire: another instance's later timer does.
    h.clock.advance(73 * HOUR);
    let later = h.client.start(nap, 60).await.unwrap();
    h.clock.advance(HOUR);
    later.wait(WAIT).await.unwrap();
    assert_eq!(
        h.runtime.metrics().timers_fired,
        1,
        "only the other instance's timer"
    );
    let history = h.history("approve-first");
    assert_eq!(count(&history, "TimerCancelled"), 1);
    assert_eq!(count(&history, "TimerFired"), 0);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_first_escalates_and_a_late_approval_is_discarded() {
    let h = harness().await;
    let instance = h
        .client
        .start_with_id(approval_workflow, "approve-late", 72 * HOUR)
        .await
        .unwrap();
    h.until_waiting_on_timer("approve-late").await;
    h.clock.advance(72 * HOUR);
    assert_eq!(instance.wait(WAIT).await.unwrap(), "escalated");
    assert_eq!(effects("approve-late"), vec!["requested", "escalated"]);
    let late = ApprovalEvent {
        approved: true,
        by: "bo".to_owned(),
    };
    let error = h
        .client
        .raise_event("approve-late", "ApprovalEvent", late)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::NotRunning {
                status: RuntimeStatus::Completed,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("already ended"), "{error}");
    let unknown = h
        .client
        .raise_event("nobody", "ApprovalEvent", ())
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, ClientError::NotFound { .. }),
        "{unknown:?}"
    );
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_raised_before_the_wait_are_kept_and_arrive_in_order() {
    let h = harness().await;
    // `nap_then_collect` waits on a timer first; the event arrives before it waits.
    let early = h
        .client
        .start_with_id(nap_then_collect, "early", ())
        .await
        .unwrap();
    h.until_waiting_on_timer("early").await;
    h.client
        .raise_event("early", "item", "before")
        .await
        .unwrap();
    h.clock.advance(HOUR);
    assert_eq!(early.wait(WAIT).await.unwrap(), vec!["before"]);

    // Three events of one name, raised at once, come out first-in, first-out.
    let three = h.client.start_with_id(collect, "three", 3).await.unwrap();
    for item in ["one", "two", "three"] {
        h.client.raise_event("three", "item", item).await.unwrap();
    }
    assert_eq!(three.wait(WAIT).await.unwrap(), vec!["one", "two", "three"]);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_timer_firings_wait_while_suspended_and_run_in_order_after_resume() {
    let h = harness().await;
    let instance = h.client.start_with_id(collect, "paused", 3).await.unwrap();
    h.client.suspend("paused", "maintenance").await.unwrap();
    h.client.suspend("paused", "twice is fine").await.unwrap();
    let status = h.client.status("paused").await.unwrap().unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Suspended);
    for item in ["a", "b", "c"] {
        h.client.raise_event("paused", "item", item).await.unwrap();
    }
    // Stored, not processed: the history has no event yet, the inbox holds three.
    assert_eq!(count(&h.history("paused"), "EventRaised"), 0);
    assert_eq!(
        h.store
            .inbox(&InstanceId::new("paused").unwrap())
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        h.client
            .status("paused")
            .await
            .unwrap()
            .unwrap()
            .runtime_status,
        RuntimeStatus::Suspended
    );
    h.client.resume("paused", "done").await.unwrap();
    assert_eq!(instance.wait(WAIT).await.unwrap(), vec!["a", "b", "c"]);
    let history = h.history("paused");
    assert_eq!(count(&history, "ExecutionSuspended"), 1);
    assert_eq!(count(&history, "ExecutionResumed"), 1);

    // A timer that comes due while suspended is stored and processed after resume.
    let napping = h.client.start_with_id(nap, "napping", 60).await.unwrap();
    h.until_waiting_on_timer("napping").await;
    h.client.suspend("napping", "hold").await.unwrap();
    h.clock.advance(HOUR);
    let id = InstanceId::new("napping").unwrap();
    eventually("the firing to be stored", async || {
        h.store.inbox(&id).unwrap().len() == 1
    })
    .await;
    assert_eq!(h.timers_of("napping"), 0);
    assert_eq!(
        h.client
            .status("napping")
            .await
            .unwrap()
            .unwrap()
            .runtime_status,
        RuntimeStatus::Suspended
    );
    h.client.resume("napping", "go").await.unwrap();
    assert_eq!(napping.wait(WAIT).await.unwrap(), 60);

    let error = h.client.suspend("napping", "too late").await.unwrap_err();
    assert!(matches!(error, ClientError::NotRunning { .. }), "{error:?}");
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_ends_a_waiting_instance_and_cancels_its_timer() {
    let h = harness().await;
    let instance = h
        .client
        .start_with_id(approval_workflow, "stop-me", HOUR)
        .await
        .unwrap();
    h.until_waiting_on_timer("stop-me").await;
    h.client.terminate("stop-me", "not needed").await.unwrap();
    assert!(matches!(
        instance.wait(WAIT).await,
        Err(ClientError::Terminated { .. })
    ));
    assert_eq!(h.timers_of("stop-me"), 0);
    h.clock.advance(2 * HOUR);
    let other = h.client.start(nap, 1).await.unwrap();
    h.clock.advance(HOUR);
    other.wait(WAIT).await.unwrap();
    assert_eq!(count(&h.history("stop-me"), "TimerFired"), 0);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_start_waits_for_its_time() {
    let h = harness().await;
    let when = start_time() + 2 * HOUR;
    let instance = h.client.start_at(collect, 1, when).await.unwrap();
    let id = instance.id().to_string();
    let status = instance.status().await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Pending);
    // An event raised before the start is kept for it.
    h.client
        .raise_event(&id, "item", "early bird")
        .await
        .unwrap();
    let error = h.client.start_with_id(collect, &id, 1).await.unwrap_err();
    assert!(matches!(
        error,
        ClientError::AlreadyExists {
            status: RuntimeStatus::Pending,
            ..
        }
    ));
    // An hour on, it has not started: a probe timer due in that hour fires, and behind it
    // the start (due at two hours) is still pending, its timer stored.
    let probe = h.client.start(nap, 60).await.unwrap();
    h.clock.advance(HOUR);
    assert_eq!(probe.wait(WAIT).await.unwrap(), 60);
    let status = instance.status().await.unwrap();
    assert_eq!(
        status.runtime_status,
        RuntimeStatus::Pending,
        "started too early"
    );
    assert_eq!(h.timers_of(&id), 1, "the start timer went early");
    h.clock.advance(HOUR);
    assert_eq!(instance.wait(WAIT).await.unwrap(), vec!["early bird"]);

    // A scheduled instance can be terminated before it starts; its start timer goes.
    let never = h
        .client
        .start_at(nap, 1, start_time() + 10 * HOUR)
        .await
        .unwrap();
    h.client.terminate(never.id(), "cancelled").await.unwrap();
    assert_eq!(h.timers_of(never.id().as_str()), 0);
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_status_is_visible() {
    let h = harness().await;
    let instance = h
        .client
        .start_with_id(status_reporter, "reporter", ())
        .await
        .unwrap();
    eventually("the custom status to be stored", async || {
        h.store
            .instance(&InstanceId::new("reporter").unwrap())
            .unwrap()
            .and_then(|record| record.custom_status)
            .is_some()
    })
    .await;
    let status = instance.status().await.unwrap();
    assert_eq!(
        status.custom_status_as::<serde_json::Value>().unwrap(),
        Some(serde_json::json!({ "stage": "waiting" }))
    );
    h.client.raise_event("reporter", "go", ()).await.unwrap();
    instance.wait(WAIT).await.unwrap();
    let status = instance.status().await.unwrap();
    assert_eq!(
        status.custom_status_as::<serde_json::Value>().unwrap(),
        Some(serde_json::json!({ "stage": "done" }))
    );
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_timers_each_fire_exactly_once() {
    // Few timers in memory, so most wait on disk and are read page by page.
    let h = harness_with(|builder| builder.timers_in_memory(500)).await;
    let mut tasks = Vec::new();
    for worker in 0..20u64 {
        let client = h.client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                let n = worker * 500 + i;
                client
                    .start_with_id(nap, format!("timer-{n:05}"), 1 + n % 600)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eventually("every instance to store its timer", async || {
        h.store.scan_timers(None, 20_000).unwrap().len() == 10_000
    })
    .await;
    h.clock.advance(HOUR);
    for n in 0..10_000u64 {
        let status = h
            .client
            .wait_for_completion(format!("timer-{n:05}"), WAIT)
            .await
            .unwrap();
        assert_eq!(status.output_as::<u64>().unwrap(), Some(1 + n % 600));
    }
    for n in (0..10_000u64).step_by(97) {
        assert_eq!(count(&h.history(&format!("timer-{n:05}")), "TimerFired"), 1);
    }
    assert_eq!(h.runtime.metrics().timers_fired, 10_000);
    assert!(h.store.scan_timers(None, 10).unwrap().is_empty());
    h.runtime.shutdown().await;
}

static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static GATE_REACHED: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[activity]
async fn gate(_ctx: ActivityContext) -> Result<(), Error> {
    GATE_REACHED.notify_one();
    let _permit = GATE.acquire().await?;
    Ok(())
}

#[orchestrator]
async fn pick_then_gate(ctx: OrchestrationContext) -> Result<String, Error> {
    let event = ctx.wait_for_event::<String>("pick");
    let timer = ctx.sleep(HOUR);
    let winner = match ctx.select(event, timer).await {
        Either::Left(event) => event?,
        Either::Right(_) => "timer".to_owned(),
    };
    ctx.call_activity(gate, ()).await?;
    Ok(winner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_picks_the_same_winner_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(start_time());
    let start = || {
        Runtime::builder()
            .store_path(dir.path())
            .clock(clock.clone())
            .register(gate)
            .register(pick_then_gate)
            .shutdown_timeout(Duration::from_millis(20))
            .start()
    };
    let runtime = start().await.unwrap();
    let reached = GATE_REACHED.notified();
    runtime
        .client()
        .start_with_id(pick_then_gate, "picky", ())
        .await
        .unwrap();
    runtime
        .client()
        .raise_event("picky", "pick", "event")
        .await
        .unwrap();
    reached.await;
    runtime.shutdown().await;

    // Restarted after the timer would have come due: replay still picks the event.
    clock.advance(2 * HOUR);
    GATE.add_permits(10);
    let runtime = start().await.unwrap();
    let status = runtime
        .client()
        .wait_for_completion("picky", WAIT)
        .await
        .unwrap();
    assert_eq!(
        status.output_as::<String>().unwrap(),
        Some("event".to_owned())
    );
    assert_eq!(runtime.metrics().replays, 1);
    assert_eq!(
        runtime.metrics().timers_fired,
        0,
        "the losing timer was cancelled"
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_due_together_fire_whatever_their_ids_when_most_wait_on_disk() {
    // Ids of different lengths, one due time, room for two timers in memory: the timer
    // service must page through the store in the store's own key order.
    let h = harness_with(|builder| builder.timers_in_memory(2)).await;
    let ids = ["a", "aa", "b", "order-9", "order-10", "z", "order-100"];
    for id in ids {
        h.client.start_with_id(nap, id, 3600).await.unwrap();
    }
    eventually("every instance to store its timer", async || {
        h.store.scan_timers(None, 100).unwrap().len() == ids.len()
    })
    .await;
    h.clock.advance(2 * HOUR);
    for id in ids {
        let status = h.client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(status.runtime_status, RuntimeStatus::Completed, "{id}");
    }
    h.runtime.shutdown().await;
}
