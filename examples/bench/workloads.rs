//! The workloads: the peer harness's seven, on the same definitions (an activity `inc`
//! that returns its input + 1; chains, fan-outs, timers and events), plus
//! `recovery-10000`, `idle-timers-100000`, the entity workloads and `http-start`.
//! Completion is observed through the public client API (`wait_for_completion`,
//! `entity_state`), or for `http-start` through the HTTP management API.

use crate::http::Connection;
use crate::measure::Outcome;
use crate::{BenchError, Config, progress};
use durable::prelude::*;
use durable::{Durability, InstanceHandle};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Activity executions, counted by the activity itself.
static ACTIVITY_RUNS: AtomicU64 = AtomicU64::new(0);
/// When non-zero, `inc` records the time whenever its output is a multiple of it.
static MARK_EVERY: AtomicU64 = AtomicU64::new(0);
static MARKS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
/// While set, `gated_inc` blocks: instances stay in flight for `recovery-10000`.
static GATED: AtomicBool = AtomicBool::new(false);
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

const WAIT: Duration = Duration::from_secs(3600);

#[activity]
async fn inc(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    ACTIVITY_RUNS.fetch_add(1, Ordering::Relaxed);
    let every = MARK_EVERY.load(Ordering::Relaxed);
    if every > 0
        && (x + 1).is_multiple_of(every)
        && let Ok(mut marks) = MARKS.lock()
    {
        marks.push(Instant::now());
    }
    Ok(x + 1)
}

#[activity]
async fn gated_inc(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    if GATED.load(Ordering::SeqCst) {
        // Never completes in the runtime that started it; released (and failing, its
        // result going nowhere) only after that runtime is gone.
        GATE.acquire().await?.forget();
        return Err(Error::msg("released after the crash"));
    }
    ACTIVITY_RUNS.fetch_add(1, Ordering::Relaxed);
    Ok(x + 1)
}

/// Calls `inc` `steps` times in a row; returns `steps`.
#[orchestrator]
async fn seq_chain(ctx: OrchestrationContext, steps: u64) -> Result<u64, Error> {
    let mut value = 0;
    for _ in 0..steps {
        value = ctx.call_activity(inc, value).await?;
    }
    Ok(value)
}

/// Calls `inc(0..n)` at once; returns the sum, n(n+1)/2.
#[orchestrator]
async fn fan_out(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
    let tasks: Vec<_> = (0..n).map(|i| ctx.call_activity(inc, i)).collect();
    Ok(ctx.join_all(tasks).await?.into_iter().sum())
}

/// Sleeps on a durable timer.
#[orchestrator]
async fn sleeper(ctx: OrchestrationContext, ms: u64) -> Result<u64, Error> {
    ctx.sleep(Duration::from_millis(ms)).await?;
    Ok(ms)
}

/// Waits for the event `Go` and returns its payload.
#[orchestrator]
async fn await_event(ctx: OrchestrationContext) -> Result<String, Error> {
    ctx.wait_for_event::<String>("Go").await
}

/// One activity: what `http-start` starts over HTTP.
#[orchestrator]
async fn inc_once(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(inc, x).await
}

/// Two steps, the first gated: in flight when the process "crashes".
#[orchestrator]
async fn two_steps(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let first = ctx.call_activity(gated_inc, x).await?;
    ctx.call_activity(inc, first).await
}

/// Microseconds since the Unix epoch: the one clock that worker processes share. For the
/// hop measurement only; an orchestration that reads the clock is not deterministic, and
/// these run once each (no replay while an instance stays in memory).
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Starts each child in turn and waits for it: returns, per child, (when the parent's
/// turn asked for it, when the child's first turn ran, when the parent's turn that got its
/// result ran), in Unix microseconds.
#[orchestrator]
async fn hop_parent(
    ctx: OrchestrationContext,
    children: Vec<String>,
) -> Result<Vec<(u64, u64, u64)>, Error> {
    let mut times = Vec::with_capacity(children.len());
    for child in children {
        let asked = unix_micros();
        let first_turn = ctx
            .call_sub_orchestrator_with_id(hop_child, child, asked)
            .await?;
        times.push((asked, first_turn, unix_micros()));
    }
    Ok(times)
}

/// Returns the time of its first (and only) turn.
#[orchestrator]
async fn hop_child(_ctx: OrchestrationContext, _asked: u64) -> Result<u64, Error> {
    Ok(unix_micros())
}

/// The seed's aggregator: a counter entity.
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: u64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: u64) {
        self.value += amount;
    }
}

/// Where a workload's store is.
#[derive(Clone, Debug)]
pub enum Place {
    /// A fjall store in this directory.
    Dir(std::path::PathBuf),
    /// A schema of a PostgreSQL database (a libpq connection string).
    Schema { url: String, schema: String },
    /// A schema held by this process alone: `PostgresStore::connect`, the store as it was
    /// before workers shared schemas (no partitions, leases, fencing or messages).
    Exclusive { url: String, schema: String },
}

/// Activity executions counted in this process since the workload began.
pub fn activity_runs() -> u64 {
    ACTIVITY_RUNS.load(Ordering::SeqCst)
}

/// While set, the end of one instance is observed by polling its status every 1 ms, not
/// by the runtime's wake-up: the instance may run in another process.
static POLLING: AtomicBool = AtomicBool::new(false);
/// While set, the ends of many instances are observed by one watcher polling them in
/// turn, not by a waiter each: on a schema that workers share, a client's wait also reads
/// the instance's status every 25 ms, which with thousands of waiters loads the database.
static POLLING_MANY: AtomicBool = AtomicBool::new(false);
/// While set, the activity count is checked by the caller, across processes, against the
/// count left in `EXPECTED_ACTIVITIES`.
static DEFER_ACTIVITY_CHECK: AtomicBool = AtomicBool::new(false);
static EXPECTED_ACTIVITIES: AtomicU64 = AtomicU64::new(0);

/// How ends are observed: `multi_process` (the instances may run in other processes:
/// poll, and leave the activity check to the caller), `shared_schema` (many instances: one
/// watcher).
pub fn set_observation(multi_process: bool, shared_schema: bool) {
    POLLING.store(multi_process, Ordering::SeqCst);
    POLLING_MANY.store(multi_process || shared_schema, Ordering::SeqCst);
    DEFER_ACTIVITY_CHECK.store(multi_process, Ordering::SeqCst);
}

/// The activity count the last workload required, when the check was deferred.
pub fn expected_activities() -> u64 {
    EXPECTED_ACTIVITIES.load(Ordering::SeqCst)
}

pub async fn start_runtime(place: &Place, durability: Durability) -> Result<Runtime, BenchError> {
    let builder = match place {
        Place::Schema { url, schema } => Runtime::builder().postgres_schema(url, schema),
        Place::Dir(dir) => Runtime::builder().store_path(dir),
        Place::Exclusive { url, schema } => {
            let (url, schema) = (url.clone(), schema.clone());
            let store = tokio::task::spawn_blocking(move || {
                durable_store::PostgresStore::connect(&url, &schema)
            })
            .await
            .map_err(|error| BenchError::Failed(format!("connect: {error}")))?
            .map_err(|error| BenchError::Failed(format!("cannot open the store: {error}")))?;
            Runtime::builder().store(std::sync::Arc::new(store))
        }
    };
    builder
        .durability(durability)
        .shutdown_timeout(Duration::from_millis(100))
        .register(inc)
        .register(gated_inc)
        .register(seq_chain)
        .register(fan_out)
        .register(sleeper)
        .register(await_event)
        .register(two_steps)
        .register(inc_once)
        .register(hop_parent)
        .register(hop_child)
        .register_entity::<Counter>()
        .start()
        .await
        .map_err(|error| BenchError::Failed(format!("cannot start the runtime: {error}")))
}

fn failed(context: &'static str) -> impl Fn(durable::client::Error) -> BenchError {
    move |error| BenchError::Failed(format!("{context}: {error}"))
}

/// Runs one workload in a fresh store at `place`, in this process.
pub async fn run(
    workload: &str,
    config: &Config,
    place: &Place,
    durability: Durability,
) -> Result<Outcome, BenchError> {
    ACTIVITY_RUNS.store(0, Ordering::SeqCst);
    let count = |full: u64| config.count.unwrap_or(full / config.divisor);
    if workload == "recovery-10000" {
        return recovery(count(10_000), place, durability).await;
    }
    let runtime = start_runtime(place, durability).await?;
    let client = runtime.client();
    let outcome = drive(workload, config, &client, None).await;
    let metrics = runtime.metrics();
    runtime.shutdown().await;
    let mut outcome = outcome?;
    outcome.notes.push(format!(
        "engine: {} turns, {} commits for {} commit requests, {} history events replayed",
        metrics.turns, metrics.commits, metrics.commit_requests, metrics.history_events_replayed
    ));
    Ok(outcome)
}

/// Runs one workload (not `recovery-10000`) through `client`, whose instances a runtime
/// of this process or other processes run. `owners`: each partition's worker, for the
/// workloads that place instances on purpose.
pub async fn drive(
    workload: &str,
    config: &Config,
    client: &Client,
    owners: Option<&std::collections::BTreeMap<u16, String>>,
) -> Result<Outcome, BenchError> {
    ACTIVITY_RUNS.store(0, Ordering::SeqCst);
    EXPECTED_ACTIVITIES.store(0, Ordering::SeqCst);
    let count = |full: u64| config.count.unwrap_or(full / config.divisor);
    match workload {
        "seq10-latency" => seq10_latency(client, count(200)).await,
        "seq10-throughput" => seq10_throughput(client, count(2000)).await,
        "fanout-1000" => fanout(client, count(1000)).await,
        "fanout-10000" => fanout(client, count(10_000)).await,
        "long-history-5000" => long_history(client, count(5000)).await,
        "timer-100ms" => timer(client, count(200), 100).await,
        "event-roundtrip" => event_roundtrip(client, count(200)).await,
        "idle-timers-100000" => idle_timers(client, count(100_000)).await,
        "entity-counter" => entity_counter(client, count(100_000), 1).await,
        "entity-counter-1000" => entity_counter(client, count(100_000), 1000).await,
        "http-start" => http_start(client, count(10_000)).await,
        "cross-partition-hop" => hop(client, count(200), owners).await,
        other => Err(BenchError::Failed(format!("unknown workload {other}"))),
    }
}

fn check_output(id: &str, got: u64, expected: u64) -> Result<(), BenchError> {
    if got == expected {
        Ok(())
    } else {
        Err(BenchError::Failed(format!(
            "instance {id}: output {got}, expected {expected}"
        )))
    }
}

fn check_activity_count(expected: u64, notes: &mut Vec<String>) -> Result<(), BenchError> {
    if DEFER_ACTIVITY_CHECK.load(Ordering::SeqCst) {
        EXPECTED_ACTIVITIES.store(expected, Ordering::SeqCst);
        return Ok(());
    }
    let executed = ACTIVITY_RUNS.load(Ordering::SeqCst);
    if executed < expected {
        return Err(BenchError::Failed(format!(
            "only {executed} activity executions, expected {expected}"
        )));
    }
    notes.push(format!(
        "{executed} activity executions counted for {expected} required ({} duplicates)",
        executed - expected
    ));
    Ok(())
}

/// An instance's completion, observed by a task of its own: (when, id, output).
type Waiter = tokio::task::JoinHandle<(Instant, String, Result<u64, durable::client::Error>)>;

/// Starts observing `handle` now, so the completion time is right even when the instance
/// ends before the caller gets round to waiting (as while it is still starting others).
fn spawn_waiter(handle: InstanceHandle<u64>) -> Waiter {
    tokio::spawn(async move {
        let output = handle.wait(WAIT).await;
        (Instant::now(), handle.id().to_string(), output)
    })
}

/// Collects the waiters: each instance's completion time and output.
async fn wait_all(waiters: Vec<Waiter>) -> Result<Vec<(Instant, u64)>, BenchError> {
    let mut done = Vec::with_capacity(waiters.len());
    for waiter in waiters {
        let (at, id, output) = waiter
            .await
            .map_err(|error| BenchError::Failed(format!("waiter: {error}")))?;
        let output = output.map_err(|error| BenchError::Failed(format!("{id}: {error}")))?;
        done.push((at, output));
    }
    Ok(done)
}

/// The output of an ended instance; `None` while it runs.
async fn ended_output<O: serde::de::DeserializeOwned>(
    client: &Client,
    id: &str,
) -> Result<Option<O>, BenchError> {
    let Some(status) = client.status(id).await.map_err(failed("status"))? else {
        return Ok(None);
    };
    if !status.is_ended() {
        return Ok(None);
    }
    if status.runtime_status != RuntimeStatus::Completed {
        return Err(BenchError::Failed(format!(
            "{id} is {}: {:?}",
            status.runtime_status, status.failure
        )));
    }
    status
        .output_as::<O>()
        .map_err(|error| BenchError::Failed(format!("{id}: output: {error}")))?
        .map(Some)
        .ok_or_else(|| BenchError::Failed(format!("{id}: completed without output")))
}

/// Polls `id`'s status every `every` until it has ended.
async fn poll_until_ended<O: serde::de::DeserializeOwned>(
    client: &Client,
    id: &str,
    every: Duration,
) -> Result<O, BenchError> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(output) = ended_output(client, id).await? {
            return Ok(output);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!("{id} has not ended")));
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits for one instance: woken by this process's runtime, or (instances run by other
/// processes) by polling its status every millisecond, as the peer harness does.
async fn wait_one<O: serde::de::DeserializeOwned>(
    client: &Client,
    handle: &InstanceHandle<O>,
) -> Result<O, BenchError> {
    if POLLING.load(Ordering::SeqCst) {
        poll_until_ended(client, handle.id().as_str(), Duration::from_millis(1)).await
    } else {
        handle.wait(WAIT).await.map_err(failed("wait"))
    }
}

/// Observes the completion of many instances, from the moment each is pushed: a waiter
/// task each (this process's runtime wakes them), or one watcher that polls them one
/// after the other, every `every` until the one it looks at has ended (the instances
/// may run in other processes; an instance that ends before the ones pushed before it
/// is seen when the watcher reaches it).
enum Observer {
    Wake(Vec<Waiter>),
    Poll {
        sender: tokio::sync::mpsc::UnboundedSender<String>,
        watcher: tokio::task::JoinHandle<Result<Vec<(Instant, u64)>, BenchError>>,
    },
}

impl Observer {
    fn new(client: &Client, every: Duration) -> Observer {
        if !POLLING_MANY.load(Ordering::SeqCst) {
            return Observer::Wake(Vec::new());
        }
        let (sender, mut ids) = tokio::sync::mpsc::unbounded_channel::<String>();
        let client = client.clone();
        let watcher = tokio::spawn(async move {
            let mut done = Vec::new();
            while let Some(id) = ids.recv().await {
                let output = poll_until_ended(&client, &id, every).await?;
                done.push((Instant::now(), output));
            }
            Ok(done)
        });
        Observer::Poll { sender, watcher }
    }

    fn push(&mut self, handle: InstanceHandle<u64>) {
        match self {
            Observer::Wake(waiters) => waiters.push(spawn_waiter(handle)),
            Observer::Poll { sender, .. } => {
                let _ = sender.send(handle.id().to_string());
            }
        }
    }

    /// Each instance's completion time and output, in the order pushed.
    async fn finish(self) -> Result<Vec<(Instant, u64)>, BenchError> {
        match self {
            Observer::Wake(waiters) => wait_all(waiters).await,
            Observer::Poll { sender, watcher } => {
                drop(sender);
                watcher
                    .await
                    .map_err(|error| BenchError::Failed(format!("watcher: {error}")))?
            }
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Observer::Wake(_) => {
                "each instance's end observed by a waiter of its own (woken at the commit)"
            }
            Observer::Poll { .. } => {
                "ends observed by one watcher polling the instances' status in start order (the next one as soon as one has ended)"
            }
        }
    }
}

async fn seq10_latency(client: &Client, n: u64) -> Result<Outcome, BenchError> {
    let mut latencies = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let id = format!("seqlat-{i}");
        let handle = client
            .start_with_id(seq_chain, &id, 10)
            .await
            .map_err(failed("start"))?;
        let output = wait_one(client, &handle).await?;
        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
        check_output(&id, output, 10)?;
    }
    let wall = started.elapsed();
    let mut notes = vec![if POLLING.load(Ordering::SeqCst) {
        "one at a time; latency = start call -> completion observed (its status polled every 1 ms)"
            .to_owned()
    } else {
        "one at a time; latency = start call -> completion observed (wait_for_completion, woken at the commit)".to_owned()
    }];
    check_activity_count(n * 10, &mut notes)?;
    Ok(Outcome {
        instances: n,
        activities: n * 10,
        wall,
        samples_ms: Some(latencies),
        notes,
    })
}

async fn seq10_throughput(client: &Client, n: u64) -> Result<Outcome, BenchError> {
    let t0 = Instant::now();
    // All started at once: every start request is in flight together (each returns once
    // durable, and the runtime commits them in groups), as many clients would send them.
    let starts: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .start_with_id(seq_chain, format!("seqtp-{i}"), 10)
                    .await
            })
        })
        .collect();
    let mut observer = Observer::new(client, Duration::from_millis(5));
    for start in starts {
        let handle = start
            .await
            .map_err(|error| BenchError::Failed(format!("start task: {error}")))?
            .map_err(failed("start"))?;
        observer.push(handle);
    }
    let enqueued = t0.elapsed();
    let method = observer.method();
    let done = observer.finish().await?;
    let last = done.iter().map(|(at, _)| *at).max().unwrap_or(t0);
    for (i, (_, output)) in done.iter().enumerate() {
        check_output(&format!("seqtp-{i}"), *output, 10)?;
    }
    let mut notes = vec![format!(
        "all {n} start requests issued at once, concurrently (all acknowledged after {:.3}s, inside wall: each start returns once durable); wall = first start -> last completion observed; {method}",
        enqueued.as_secs_f64()
    )];
    check_activity_count(n * 10, &mut notes)?;
    Ok(Outcome {
        instances: n,
        activities: n * 10,
        wall: last - t0,
        samples_ms: None,
        notes,
    })
}

async fn fanout(client: &Client, n: u64) -> Result<Outcome, BenchError> {
    let t0 = Instant::now();
    let id = format!("fanout-{n}");
    let handle = client
        .start_with_id(fan_out, &id, n)
        .await
        .map_err(failed("start"))?;
    let output = wait_one(client, &handle).await?;
    let wall = t0.elapsed();
    check_output(&id, output, n * (n + 1) / 2)?;
    let history = client
        .status_with_history(&id)
        .await
        .map_err(failed("status"))?
        .and_then(|status| status.history)
        .map_or(0, |history| history.len());
    let mut notes = vec![format!(
        "1 orchestration, {n} concurrent activities joined with ctx.join_all; sum verified = {}; history events = {history}",
        n * (n + 1) / 2
    )];
    check_activity_count(n, &mut notes)?;
    Ok(Outcome {
        instances: 1,
        activities: n,
        wall,
        samples_ms: None,
        notes,
    })
}

async fn long_history(client: &Client, n: u64) -> Result<Outcome, BenchError> {
    let block = (n / 10).max(1);
    MARKS.lock().map(|mut marks| marks.clear()).ok();
    MARK_EVERY.store(block, Ordering::SeqCst);
    let t0 = Instant::now();
    let id = format!("longhist-{n}");
    let result = async {
        let handle = client
            .start_with_id(seq_chain, &id, n)
            .await
            .map_err(failed("start"))?;
        wait_one(client, &handle).await
    }
    .await;
    MARK_EVERY.store(0, Ordering::SeqCst);
    let wall = t0.elapsed();
    let output = result?;
    check_output(&id, output, n)?;
    let marks = MARKS.lock().map(|marks| marks.clone()).unwrap_or_default();
    let mut previous = t0;
    let blocks_ms: Vec<f64> = marks
        .iter()
        .map(|at| {
            let ms = (*at - previous).as_secs_f64() * 1e3;
            previous = *at;
            ms
        })
        .collect();
    let blocks: Vec<String> = blocks_ms.iter().map(|ms| format!("{ms:.0}")).collect();
    let mut notes = vec![
        format!("1 orchestration, {n} sequential activities"),
        format!(
            "ms per successive block of {block} steps: [{}]",
            blocks.join(", ")
        ),
    ];
    if let (Some(first), Some(last)) = (blocks_ms.first(), blocks_ms.last())
        && blocks_ms.len() == 10
    {
        // The first block includes the start; the growth the ratio shows is replay cost.
        let first_fifth: f64 = blocks_ms[..2].iter().sum();
        notes.push(format!(
            "last block / first block = {:.2}x; first {} steps {first_fifth:.0} ms, all {n} steps {:.0} ms = {:.2}x the first {} (linear: 5x)",
            last / first,
            2 * block,
            wall.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3 / first_fifth,
            2 * block
        ));
    }
    check_activity_count(n, &mut notes)?;
    Ok(Outcome {
        instances: 1,
        activities: n,
        wall,
        samples_ms: None,
        notes,
    })
}

async fn timer(client: &Client, n: u64, delay_ms: u64) -> Result<Outcome, BenchError> {
    let t0 = Instant::now();
    let mut starts = Vec::with_capacity(n as usize);
    let mut observer = Observer::new(client, Duration::from_millis(1));
    for i in 0..n {
        starts.push(Instant::now());
        let handle = client
            .start_with_id(sleeper, format!("timer-{i}"), delay_ms)
            .await
            .map_err(failed("start"))?;
        observer.push(handle);
    }
    let enqueued = t0.elapsed();
    let method = observer.method();
    let done = observer.finish().await?;
    let mut lateness = Vec::with_capacity(done.len());
    let mut early = 0;
    for ((at, output), started) in done.iter().zip(&starts) {
        check_output("timer", *output, delay_ms)?;
        let late = (*at - *started).as_secs_f64() * 1e3 - delay_ms as f64;
        if late < 0.0 {
            early += 1;
        }
        lateness.push(late);
    }
    if early > 0 {
        return Err(BenchError::Failed(format!(
            "{early} timers completed earlier than {delay_ms} ms after their start request"
        )));
    }
    let last = done.iter().map(|(at, _)| *at).max().unwrap_or(t0);
    Ok(Outcome {
        instances: n,
        activities: 0,
        wall: last - t0,
        samples_ms: Some(lateness),
        notes: vec![format!(
            "{n} started back to back (starts took {:.3}s), each observed from its start on; lateness = completion observed - start request - {delay_ms}ms; wall = first start -> last completion; {method}",
            enqueued.as_secs_f64()
        )],
    })
}

async fn event_roundtrip(client: &Client, n: u64) -> Result<Outcome, BenchError> {
    let setup = Instant::now();
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        // `start` returns once the first turn (which begins the wait) is durable.
        let handle = client
            .start_with_id(await_event, format!("event-{i}"), ())
            .await
            .map_err(failed("start"))?;
        handles.push(handle);
    }
    let setup = setup.elapsed();
    let mut latencies = Vec::with_capacity(n as usize);
    let t0 = Instant::now();
    for (i, handle) in handles.iter().enumerate() {
        let payload = format!("payload-{i}");
        let sent = Instant::now();
        client
            .raise_event(handle.id(), "Go", &payload)
            .await
            .map_err(failed("raise_event"))?;
        let output = wait_one(client, handle).await?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        if output != payload {
            return Err(BenchError::Failed(format!(
                "{}: output {output:?}, expected {payload:?}",
                handle.id()
            )));
        }
    }
    Ok(Outcome {
        instances: n,
        activities: 0,
        wall: t0.elapsed(),
        samples_ms: Some(latencies),
        notes: vec![format!(
            "setup (start {n}, each waiting once start returns) took {:.3}s, not in wall; events raised one at a time; latency = raise_event call -> completion observed",
            setup.as_secs_f64()
        )],
    })
}

/// The cross-partition hop: one parent orchestration starts `n` sub-orchestrations one
/// after the other, each with an id in a partition that another worker owns (with one
/// worker: another partition); the child records the time of its first turn. Samples:
/// parent's turn -> child's first turn (the parent's commit, the message to the child's
/// partition, the child's first turn); the round trip back to the parent is in the notes.
async fn hop(
    client: &Client,
    n: u64,
    owners: Option<&std::collections::BTreeMap<u16, String>>,
) -> Result<Outcome, BenchError> {
    let owner_of = |id: &str| {
        let partition = durable_store::partition_of(id);
        owners
            .and_then(|owners| owners.get(&partition).cloned())
            .unwrap_or_default()
    };
    let workers: std::collections::BTreeSet<String> = owners
        .map(|owners| owners.values().cloned().collect())
        .unwrap_or_default();
    // The parent on a worker other than this process when there is one.
    let me = format!(":{}:", std::process::id());
    let parent = (0..)
        .map(|k| format!("hop-parent-{k}"))
        .find(|id| workers.len() < 2 || !owner_of(id).contains(&me))
        .unwrap_or_default();
    let parent_partition = durable_store::partition_of(&parent);
    let parent_owner = owner_of(&parent);
    let children: Vec<String> = (0..)
        .map(|j| format!("{parent}-child-{j}"))
        .filter(|id| {
            if workers.len() < 2 {
                durable_store::partition_of(id) != parent_partition
            } else {
                owner_of(id) != parent_owner
            }
        })
        .take(n as usize)
        .collect();
    let t0 = Instant::now();
    let handle = client
        .start_with_id(hop_parent, &parent, children)
        .await
        .map_err(failed("start"))?;
    let times = wait_one(client, &handle).await?;
    let wall = t0.elapsed();
    if times.len() as u64 != n {
        return Err(BenchError::Failed(format!(
            "{} hops recorded, expected {n}",
            times.len()
        )));
    }
    let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e3;
    let hops: Vec<f64> = times.iter().map(|(a, f, _)| ms(*a, *f)).collect();
    let round_trips: Vec<f64> = times.iter().map(|(a, _, b)| ms(*a, *b)).collect();
    let (rt50, rt99) = crate::measure::p50_p99(&round_trips);
    let placement = if workers.len() < 2 {
        "every child in a partition other than the parent's (one worker: no process boundary)"
            .to_owned()
    } else {
        format!(
            "every child in a partition another worker owns than the parent's ({} workers)",
            workers.len()
        )
    };
    Ok(Outcome {
        instances: n + 1,
        activities: 0,
        wall,
        samples_ms: Some(hops),
        notes: vec![
            format!(
                "1 parent starting {n} sub-orchestrations one after the other; {placement}; p50/p99 = parent's turn that calls the child -> child's first turn (wall clocks of the processes, which share the machine's clock)"
            ),
            format!(
                "round trip parent's turn -> child's first turn -> parent's next turn: p50 {rt50:.3} ms, p99 {rt99:.3} ms"
            ),
        ],
    })
}

/// `n` instances in flight when the process stops (each with an activity started and not
/// finished); then a new runtime starts on the store: timed from the start call to every
/// instance completed.
async fn recovery(n: u64, dir: &Place, durability: Durability) -> Result<Outcome, BenchError> {
    // Permits left over from an earlier run (whose stopped runtime dropped some of the
    // blocked activities before they took theirs) would let gated activities through.
    while let Ok(permit) = GATE.try_acquire() {
        permit.forget();
    }
    GATED.store(true, Ordering::SeqCst);
    let runtime = start_runtime(dir, durability).await?;
    let client = runtime.client();
    let setup = Instant::now();
    let mut starters = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        starters.push(tokio::spawn(async move {
            for i in (worker..n).step_by(8) {
                client
                    .start_with_id(two_steps, format!("inflight-{i}"), i)
                    .await?;
            }
            Ok::<(), durable::client::Error>(())
        }));
    }
    for starter in starters {
        starter
            .await
            .map_err(|error| BenchError::Failed(format!("starter: {error}")))?
            .map_err(failed("start"))?;
    }
    progress!(
        "  {n} instances in flight after {:.2}s; stopping",
        setup.elapsed().as_secs_f64()
    );
    runtime.shutdown().await;
    GATED.store(false, Ordering::SeqCst);
    ACTIVITY_RUNS.store(0, Ordering::SeqCst);

    let t0 = Instant::now();
    let runtime = start_runtime(dir, durability).await?;
    let started = t0.elapsed();
    let client = runtime.client();
    for i in 0..n {
        let status = client
            .wait_for_completion(format!("inflight-{i}"), WAIT)
            .await
            .map_err(failed("wait"))?;
        if status.runtime_status != RuntimeStatus::Completed {
            return Err(BenchError::Failed(format!(
                "inflight-{i} is {}, expected Completed: {:?}",
                status.runtime_status, status.failure
            )));
        }
        let output: Option<u64> = status
            .output_as()
            .map_err(|error| BenchError::Failed(format!("output: {error}")))?;
        check_output(&format!("inflight-{i}"), output.unwrap_or_default(), i + 2)?;
    }
    let wall = t0.elapsed();
    let metrics = runtime.metrics();
    runtime.shutdown().await;
    // Let the blocked activities of the stopped runtime finish (their results go nowhere).
    GATE.add_permits(n as usize);
    let mut notes = vec![format!(
        "{n} instances each in flight with one activity started and not finished when the first runtime stopped; wall = Runtime::start call -> all {n} completed (start-up and recovery scan {:.3}s of it); {} instances replayed",
        started.as_secs_f64(),
        metrics.replays
    )];
    check_activity_count(2 * n, &mut notes)?;
    Ok(Outcome {
        instances: n,
        activities: 2 * n,
        wall,
        samples_ms: None,
        notes,
    })
}

/// `n` instances started and left waiting on one-hour timers: what idle instances cost.
/// The figure that matters is the peak RSS in the notes.
async fn idle_timers(client: &Client, n: u64) -> Result<Outcome, BenchError> {
    let t0 = Instant::now();
    let mut starters = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        starters.push(tokio::spawn(async move {
            for i in (worker..n).step_by(8) {
                client
                    .start_with_id(sleeper, format!("idle-{i}"), 3_600_000)
                    .await?;
            }
            Ok::<(), durable::client::Error>(())
        }));
    }
    for starter in starters {
        starter
            .await
            .map_err(|error| BenchError::Failed(format!("starter: {error}")))?
            .map_err(failed("start"))?;
    }
    let wall = t0.elapsed();
    for i in (0..n).step_by((n as usize / 100).max(1)) {
        let status = client
            .status(format!("idle-{i}"))
            .await
            .map_err(failed("status"))?
            .ok_or_else(|| BenchError::Failed(format!("idle-{i} is missing")))?;
        if status.runtime_status != RuntimeStatus::Running {
            return Err(BenchError::Failed(format!(
                "idle-{i} is {}, expected Running",
                status.runtime_status
            )));
        }
    }
    Ok(Outcome {
        instances: n,
        activities: 0,
        wall,
        samples_ms: None,
        notes: vec![format!(
            "{n} instances started by 8 concurrent clients, each then waiting on a 1-hour durable timer; wall = the starts; 1 in 100 checked Running; the runtime keeps at most 10,000 instances and 10,000 timers in memory (defaults)"
        )],
    })
}

/// `n` signals `add(1)` from 100 concurrent client tasks to `entities` counters (round
/// robin); wall = first signal sent -> every counter read back with its exact total.
async fn entity_counter(client: &Client, n: u64, entities: u64) -> Result<Outcome, BenchError> {
    const SENDERS: u64 = 100;
    let t0 = Instant::now();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let client = client.clone();
        senders.push(tokio::spawn(async move {
            for i in (sender..n).step_by(SENDERS as usize) {
                client
                    .entity::<Counter>(format!("counter-{}", i % entities))
                    .signal()
                    .add(1)
                    .await?;
            }
            Ok::<(), durable::client::Error>(())
        }));
    }
    for sender in senders {
        sender
            .await
            .map_err(|error| BenchError::Failed(format!("sender: {error}")))?
            .map_err(failed("signal"))?;
    }
    let acknowledged = t0.elapsed();
    // Every signal is durable once acknowledged; the last ones may still be running.
    for entity in 0..entities {
        let expected = (entity..n).step_by(entities as usize).count() as u64;
        let key = format!("counter-{entity}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = client
                .entity_state::<Counter>(&key)
                .await
                .map_err(failed("entity_state"))?
                .map_or(0, |counter| counter.value);
            if value == expected {
                break;
            }
            if value > expected || Instant::now() > deadline {
                return Err(BenchError::Failed(format!(
                    "{key}: value {value}, expected {expected}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let wall = t0.elapsed();
    Ok(Outcome {
        instances: 0,
        activities: n,
        wall,
        samples_ms: None,
        notes: vec![format!(
            "entity operations: {n} signals add(1) to {entities} counter entit{} from {SENDERS} concurrent client tasks, each signal acknowledged once durable (all acknowledged after {:.3}s); activities = operations applied; wall = first signal -> every counter read back exact",
            if entities == 1 { "y" } else { "ies" },
            acknowledged.as_secs_f64()
        )],
    })
}

/// What one `POST orchestrators/inc_once` produced.
struct Started {
    id: String,
    /// The path of its `statusQueryGetUri`, polled on the same connection.
    status_path: String,
    expected: u64,
}

/// What the polls of one connection counted.
#[derive(Default)]
struct Polls {
    polls: u64,
    not_ready: u64,
    latencies_ms: Vec<f64>,
}

const HTTP_CONNECTIONS: u64 = 32;
const HTTP_KEY: &str = "bench-key";

/// `n` starts of `inc_once(i)` through the HTTP management API on loopback, over 32
/// keep-alive connections each sending one request at a time, every answer checked to be
/// `202` with the check-status payload; then every instance is polled at its
/// `statusQueryGetUri` until it answers `200` with output `i + 1`. `wall_s` and the
/// percentiles cover the starts; the polls are in the notes.
async fn http_start(client: &Client, n: u64) -> Result<Outcome, BenchError> {
    let server = durable::http::serve(
        client.clone(),
        ([127, 0, 0, 1], 0),
        durable::http::Options::with_key(HTTP_KEY),
    )
    .await
    .map_err(|error| BenchError::Failed(format!("cannot serve HTTP: {error}")))?;
    let addr = server.local_addr();
    let mut connections = Vec::new();
    for _ in 0..HTTP_CONNECTIONS.min(n) {
        connections.push(Connection::open(addr, HTTP_KEY).await?);
    }
    let connection_count = connections.len() as u64;

    let t0 = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .zip(0..)
        .map(|(connection, first)| {
            let indices = (first..n).step_by(connection_count as usize);
            tokio::spawn(start_over_http(connection, addr, indices))
        })
        .collect();
    let mut latencies = Vec::with_capacity(n as usize);
    let mut per_connection = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (connection, started, connection_latencies) = joined(task.await)??;
        latencies.extend(connection_latencies);
        per_connection.push((connection, started));
    }
    let start_wall = t0.elapsed();
    check_unique_ids(&per_connection, n)?;

    let polling = Instant::now();
    let tasks: Vec<_> = per_connection
        .into_iter()
        .map(|(connection, started)| tokio::spawn(poll_until_completed(connection, started)))
        .collect();
    let mut polls = Polls::default();
    for task in tasks {
        let counted = joined(task.await)??;
        polls.polls += counted.polls;
        polls.not_ready += counted.not_ready;
        polls.latencies_ms.extend(counted.latencies_ms);
    }
    let poll_wall = polling.elapsed();
    let all_done = t0.elapsed();
    server.shutdown().await;

    let (poll_p50, poll_p99) = crate::measure::p50_p99(&polls.latencies_ms);
    let mut notes = vec![
        format!(
            "{n} POST orchestrators/inc_once (1 activity each) over {connection_count} keep-alive HTTP/1.1 connections on loopback, one request in flight per connection, bearer key; each answer checked 202 with the check-status payload (id unique, statusQueryGetUri = this server's instances/{{id}}); wall and p50/p99 = the starts (each answered once the start is durable)"
        ),
        format!(
            "then every instance polled at its statusQueryGetUri on the same connections until 200 with runtimeStatus Completed and output i+1: {} status polls in {:.3}s = status polls/s {:.0} ({} answered 202 still running; poll latency p50 {poll_p50:.3} ms, p99 {poll_p99:.3} ms); all {n} verified {:.3}s after the first start",
            polls.polls,
            poll_wall.as_secs_f64(),
            polls.polls as f64 / poll_wall.as_secs_f64(),
            polls.not_ready,
            all_done.as_secs_f64()
        ),
        "every response framed by Content-Length (the client accepts nothing else)".to_owned(),
    ];
    check_activity_count(n, &mut notes)?;
    Ok(Outcome {
        instances: n,
        activities: n,
        wall: start_wall,
        samples_ms: Some(latencies),
        notes,
    })
}

fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, BenchError> {
    result.map_err(|error| BenchError::Failed(format!("HTTP task: {error}")))
}

/// Starts `inc_once(i)` for each of `indices`, one request at a time on `connection`.
async fn start_over_http(
    mut connection: Connection,
    addr: std::net::SocketAddr,
    indices: impl Iterator<Item = u64>,
) -> Result<(Connection, Vec<Started>, Vec<f64>), BenchError> {
    let path = format!(
        "{}/orchestrators/{}",
        durable::http::BASE_PATH,
        inc_once::NAME
    );
    let mut started = Vec::new();
    let mut latencies = Vec::new();
    for i in indices {
        let sent = Instant::now();
        let response = connection
            .post_json(&path, i.to_string().as_bytes())
            .await?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        started.push(check_accepted(&response, addr, i)?);
    }
    Ok((connection, started, latencies))
}

/// The `202` of a start: `{id, statusQueryGetUri, ...}`, the URL on this server.
fn check_accepted(
    response: &crate::http::Response,
    addr: std::net::SocketAddr,
    i: u64,
) -> Result<Started, BenchError> {
    let body = response.json()?;
    let field = |name: &str| body.get(name).and_then(serde_json::Value::as_str);
    let (Some(id), Some(status_uri)) = (field("id"), field("statusQueryGetUri")) else {
        return Err(BenchError::Failed(format!(
            "start of inc_once({i}): HTTP {}, expected 202 with id and statusQueryGetUri: {body}",
            response.status
        )));
    };
    let expected_uri = format!("http://{addr}{}/instances/{id}", durable::http::BASE_PATH);
    if response.status != 202 || id.is_empty() || status_uri != expected_uri {
        return Err(BenchError::Failed(format!(
            "start of inc_once({i}): HTTP {}, statusQueryGetUri {status_uri:?}, expected 202 and {expected_uri:?}",
            response.status
        )));
    }
    Ok(Started {
        id: id.to_owned(),
        status_path: status_uri[format!("http://{addr}").len()..].to_owned(),
        expected: i + 1,
    })
}

fn check_unique_ids(
    per_connection: &[(Connection, Vec<Started>)],
    n: u64,
) -> Result<(), BenchError> {
    let ids: std::collections::BTreeSet<&str> = per_connection
        .iter()
        .flat_map(|(_, started)| started.iter().map(|s| s.id.as_str()))
        .collect();
    if ids.len() as u64 != n {
        return Err(BenchError::Failed(format!(
            "{n} starts answered {} distinct instance ids",
            ids.len()
        )));
    }
    Ok(())
}

/// Polls each instance until it answers `200` with its expected output; one pass over the
/// connection's instances that finds none finished pauses 1 ms, so the polls do not take
/// the cores from the engine.
async fn poll_until_completed(
    mut connection: Connection,
    started: Vec<Started>,
) -> Result<Polls, BenchError> {
    let mut pending: std::collections::VecDeque<Started> = started.into();
    let mut polls = Polls::default();
    let mut misses_in_a_row = 0;
    while let Some(instance) = pending.pop_front() {
        let sent = Instant::now();
        let response = connection.get(&instance.status_path).await?;
        polls.latencies_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        polls.polls += 1;
        if response.status == 202 {
            polls.not_ready += 1;
            pending.push_back(instance);
            misses_in_a_row += 1;
            if misses_in_a_row >= pending.len() {
                misses_in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            continue;
        }
        misses_in_a_row = 0;
        check_completed(&response, &instance)?;
    }
    Ok(polls)
}

/// A `200` status: Completed, this instance, output as expected.
fn check_completed(response: &crate::http::Response, instance: &Started) -> Result<(), BenchError> {
    let body = response.json()?;
    let completed = response.status == 200
        && body
            .get("runtimeStatus")
            .and_then(serde_json::Value::as_str)
            == Some("Completed")
        && body.get("instanceId").and_then(serde_json::Value::as_str) == Some(&instance.id)
        && body.get("output").and_then(serde_json::Value::as_u64) == Some(instance.expected);
    if completed {
        Ok(())
    } else {
        Err(BenchError::Failed(format!(
            "instance {}: HTTP {}, expected 200 Completed with output {}: {body}",
            instance.id, response.status, instance.expected
        )))
    }
}
