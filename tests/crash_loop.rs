//! The crash loop: a mixed workload — chains, fan-outs of 100, sub-orchestrations,
//! durable timers of 0–200 ms, external events, entity counters, locked transfers and a
//! flaky activity called with retries — runs in child processes that are killed with
//! SIGKILL at random moments and restarted, again and again, until the workload finishes.
//! Then the store is held to a crash-free in-memory run of the same workload, and to
//! results computed from the inputs:
//! - every orchestration ended as in the crash-free run, with the computed output;
//! - every entity holds the crash-free run's state (counter sums, conserved transfer
//!   totals; every operation applied exactly once) and no lock;
//! - an activity ran again only while its completion was not committed, never after;
//! - no instance is stuck and nothing is left to run; every timer fired at most once and
//!   not early; every event the driver's schedule raised was consumed exactly once.
//!
//! Two tests run it over two stores:
//! - `crash_loop`: one child process over a fjall store, killed and restarted.
//!   `cargo test --test crash_loop -- crash_loop --exact` runs 20 kills; longer campaigns:
//!   `cargo test --release --test crash_loop -- crash_loop --exact --kills 500 --seed 42`.
//! - `crash_loop_postgres`: several worker processes (3 by default) sharing one PostgreSQL
//!   schema, one of them killed and restarted every 1–5 s. `cargo test --test crash_loop
//!   -- crash_loop_postgres` runs 12 kills; longer campaigns: `cargo test --release --test
//!   crash_loop -- crash_loop_postgres --kills 500 --workers 4 --seed 42` (and
//!   `--kill-every 1000..5000`, in milliseconds; `--lease-ttl MS`). Without PostgreSQL on
//!   the machine it prints a skip notice and passes, unless `DURABLE_REQUIRE_POSTGRES` is
//!   set. Besides the checks above: no `messages` row (inter-partition messages, client
//!   commands) or `replies` row (an answer nobody took: a command answered twice) is
//!   left, the failover of each kill is timed, and the sub-orchestrations land in other
//!   partitions than their parents (their ids are hashed).
//!
//! The seed fixes the workload's inputs and the kill schedule and is printed first, so a
//! failure can be rerun with the same schedule (where exactly a kill lands still depends
//! on timing). A failed campaign keeps its directory and names it. With PostgreSQL it
//! holds, besides the side-effect logs: each worker process's runtime log
//! (`worker-w{slot}.{incarnation}.log`: partitions acquired, handed over, lost, fenced
//! commits), the driver's (`driver.log`: rounds, kills, every start and event with its
//! answer), all time-stamped in Unix milliseconds; `schema-dump.txt` (what the schema
//! holds, decoded) and `database.sql` (`pg_dump`), whose `messages_audit` table records
//! every row put into or taken out of `messages` (a trigger the driver installs), so that
//! a message sent twice can be told from one delivered twice. `--lease-ttl MS` shortens
//! the workers' leases: on a loaded machine, workers then stall past them and lose
//! partitions while they run, which is where sharing a schema is hardest.
//!
//! The workload comes in batches, one per kill: with fjall each generation (incarnation
//! of the child) starts one, with PostgreSQL the driver starts one between two kills. A
//! waiting orchestration's events are raised one per batch after its start: kills keep
//! landing on fresh work, and events arrive after restarts. The waiters keep the
//! workload from finishing before the last batch, which raises the rest and runs to the
//! end.
//!
//! How "no committed step re-ran" is checked. Each activity run appends a line to a
//! side-effect log (`runs.log`) before it does anything else.
//! - fjall: one process at a time runs everything, so it is enough to know what each
//!   incarnation found committed when it began: before its runtime starts, the child
//!   records every completion the store holds (`committed.log`). A task that ran in an
//!   incarnation that began with its completion in the store ran after its commit.
//! - PostgreSQL: workers live on while partitions move between them (a dead worker's
//!   lease expires, a restarted one takes its fair share back), so what a worker found at
//!   its start says nothing about a partition it takes up later. Instead each run reads
//!   the store itself, at its start, before its side effect: the task's work item, and if
//!   that is gone, the history. A completion is committed with the deletion of its work
//!   item in one transaction, and in this workload nothing else deletes one (no activity
//!   is cancelled), so a run that finds its work item gone began after its completion was
//!   committed: a re-run of a committed step, which the driver fails on. A run that finds
//!   it is allowed, however many there are (a killed worker's runs are redone by the next
//!   owner; a worker that lost a partition may finish a run whose result it cannot
//!   commit). The read is a fresh transaction on a connection of its own, so it sees
//!   every commit acknowledged before it; a commit racing it is one the run did not
//!   follow, and fencing makes sure a partition's new owner reads the store only after
//!   the last commit of the old one.
//!
//! This target has `harness = false`: `main` speaks enough of libtest's command line for
//! `cargo test` filters and for nextest (`--list --format terse`, `--exact`). The children
//! are this same binary, run again with `CHILD_VAR` (fjall) or `WORKER_VAR` (PostgreSQL)
//! set.

use durable::client::Error as ClientError;
use durable::prelude::*;
use durable::store::partition_of;
use durable::store::{
    ActivityKey, Durability, EntityRecord, ExecutionId, FjallStore, HistoryEvent, InstanceQuery,
    InstanceRecord, MemoryStore, PostgresStore, Store, TaskId,
};
use durable::{Client, Either, InstanceId, Timestamp};
use durable_testkit::postgres::Server;
use durable_testkit::{SideEffectLog, spawn_self, stdout_lines};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The names under which the harness lists its tests: over fjall, over PostgreSQL.
const FJALL_TEST: &str = "crash_loop";
const POSTGRES_TEST: &str = "crash_loop_postgres";
/// Set (to the child's configuration, as JSON) in the child process.
const CHILD_VAR: &str = "DURABLE_CRASH_LOOP_CHILD";
/// Set (to the worker's configuration, as JSON) in a PostgreSQL worker process.
const WORKER_VAR: &str = "DURABLE_CRASH_LOOP_WORKER";
/// What the child prints on stdout once its runtime has started (recovery done).
const READY: &str = "crash-loop-child-ready";
/// Kills in a plain `cargo test` run.
const CI_KILLS: u32 = 20;
/// A kill lands this long after the child reports it is running, drawn uniformly.
const KILL_DELAY_MS: (u64, u64) = (5, 400);
/// Bounds on one child: to start, and (the last one) to finish everything.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const FINISH_TIMEOUT: Duration = Duration::from_secs(300);

const COUNTERS: u64 = 3;
const ACCOUNTS: u64 = 4;
const FAN_WIDTH: u32 = 100;
const EVENTS_PER_WAITER: u32 = 3;
/// Loses every race it is in, unless a generation takes longer to start than this.
const LOSING_TIMER: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The workload: activities, entities, orchestrators.

/// In a child: where activity runs are written down, and by whom.
struct Recorder {
    log: SideEffectLog,
    /// The fjall child's generation, or the PostgreSQL worker's `w{slot}.{incarnation}`.
    who: String,
    /// A PostgreSQL worker's own connection to the schema, for each run to read whether
    /// its completion is committed already (see the header).
    probe: Option<Arc<PostgresStore>>,
}

/// Unset in the driver, whose crash-free reference run records nothing.
static RUNS: OnceLock<Recorder> = OnceLock::new();

/// Writes down an activity run, before it does anything else:
/// `who|activity|instance:execution:task|idempotency key`, and with PostgreSQL `|open`
/// when the task's completion was not committed as the run began, `|committed` or
/// `|gone` when it was (see [`completion_state`]), then `|` the time (Unix ms).
async fn record_run(ctx: &ActivityContext) {
    let Some(recorder) = RUNS.get() else {
        return;
    };
    let mut line = format!(
        "{}|{}|{}:{}:{}|{}",
        recorder.who,
        ctx.name(),
        ctx.instance_id(),
        ctx.execution_id(),
        ctx.task_id(),
        ctx.idempotency_key()
    );
    if let Some(probe) = &recorder.probe {
        let key = ActivityKey {
            instance: ctx.instance_id().clone(),
            execution: ctx.execution_id(),
            task: ctx.task_id(),
        };
        let found = completion_state(probe, key).await;
        // When, to set runs beside the workers' and the driver's logs.
        line.push_str(&format!("|{found}|{}", unix_ms()));
    }
    recorder.log.append(&line);
}

/// Whether the completion of the task `key` is committed: `open` while its work item is
/// in the store; once it is gone, `committed` if the history holds the result, else
/// `gone`. A read that fails is written down as such (the driver fails on it).
async fn completion_state(probe: &Arc<PostgresStore>, key: ActivityKey) -> String {
    let probe = Arc::clone(probe);
    // PostgreSQL reads block on the engine's own runtime: off the async threads.
    let read = tokio::task::spawn_blocking(move || -> Result<&'static str, String> {
        if probe.activity(&key).map_err(|e| e.to_string())?.is_some() {
            return Ok("open");
        }
        let history = probe
            .history(&key.instance, key.execution)
            .map_err(|e| e.to_string())?;
        let resolved = history.iter().any(|event| match event {
            HistoryEvent::TaskCompleted { id, .. } | HistoryEvent::TaskFailed { id, .. } => {
                *id == key.task
            }
            _ => false,
        });
        Ok(if resolved { "committed" } else { "gone" })
    })
    .await;
    match read {
        Ok(Ok(state)) => state.to_owned(),
        Ok(Err(error)) => format!("unread: {error}").replace('|', "/"),
        Err(join) => format!("unread: {join}").replace('|', "/"),
    }
}

/// An LCG step: outputs depend on every activity of a chain, in order.
fn mix(x: u64) -> u64 {
    x.wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        >> 33
}

/// FNV-1a: a hash that is the same in every process and every build.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The unit of work; sleeps up to 7 ms so that kills also land inside activity runs.
#[activity]
async fn step(ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    record_run(&ctx).await;
    let pause = x % 8;
    if pause > 0 {
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    Ok(mix(x))
}

/// Fails two runs in three, as a function of the task alone (instance and task id), so a
/// crash-free run fails the same attempts.
#[activity]
async fn flaky(ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    record_run(&ctx).await;
    let task = format!("{}/{}", ctx.instance_id(), ctx.task_id());
    if !fnv(task.as_bytes()).is_multiple_of(3) {
        return Err(Error::msg(format!("flaky failure of task {task}")));
    }
    Ok(mix(x))
}

/// A counter that applies each operation id once and counts any second delivery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    value: i64,
    ops: BTreeSet<u64>,
    duplicates: u64,
}

#[entity]
impl Counter {
    fn add(&mut self, op: u64, amount: i64) {
        if self.ops.insert(op) {
            self.value += amount;
        } else {
            self.duplicates += 1;
        }
    }
}

/// An account, with the same exactly-once bookkeeping as [`Counter`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    ops: BTreeSet<u64>,
    duplicates: u64,
}

#[entity]
impl Account {
    fn deposit(&mut self, op: u64, amount: i64) {
        self.apply(op, amount);
    }

    fn withdraw(&mut self, op: u64, amount: i64) {
        self.apply(op, -amount);
    }
}

impl Account {
    fn apply(&mut self, op: u64, delta: i64) {
        if self.ops.insert(op) {
            self.balance += delta;
        } else {
            self.duplicates += 1;
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChainInput {
    start: u64,
    length: u32,
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, input: ChainInput) -> Result<u64, Error> {
    let mut value = input.start;
    for _ in 0..input.length {
        value = ctx.call_activity(step, value).await?;
    }
    Ok(value)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FanInput {
    base: u64,
    width: u32,
}

#[orchestrator]
async fn fan(ctx: OrchestrationContext, input: FanInput) -> Result<u64, Error> {
    let tasks: Vec<_> = (0..input.width)
        .map(|i| ctx.call_activity(step, input.base + u64::from(i)))
        .collect();
    let outputs = ctx.join_all(tasks).await?;
    Ok(outputs.into_iter().fold(0, u64::wrapping_add))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TimersInput {
    delays_ms: Vec<u64>,
    value: u64,
}

/// Sleeps on durable timers with an activity after each, then races a timer against an
/// event that never comes (the wait is dropped) and against a timer a minute away (which
/// is cancelled).
#[orchestrator]
async fn sleepy(ctx: OrchestrationContext, input: TimersInput) -> Result<u64, Error> {
    let mut value = input.value;
    for delay in &input.delays_ms {
        ctx.sleep(Duration::from_millis(*delay)).await?;
        value = ctx.call_activity(step, value).await?;
    }
    let last = Duration::from_millis(input.delays_ms.last().copied().unwrap_or(0));
    let never = ctx.wait_for_event::<u64>("never");
    match ctx.select(never, ctx.sleep(last)).await {
        Either::Right(outcome) => outcome?,
        Either::Left(_) => return Err(Error::msg("an event that nobody raises won the race")),
    }
    match ctx.select(ctx.sleep(last), ctx.sleep(LOSING_TIMER)).await {
        Either::Left(outcome) => outcome?,
        Either::Right(_) => return Err(Error::msg("a timer a minute away won the race")),
    }
    Ok(value)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ParentInput {
    chain: ChainInput,
    fan: FanInput,
    timers: TimersInput,
}

/// A chain, then a fan-out and timers side by side, each a sub-orchestration.
#[orchestrator]
async fn nested(ctx: OrchestrationContext, input: ParentInput) -> Result<u64, Error> {
    let chained = ctx.call_sub_orchestrator(chain, input.chain).await?;
    let children = [
        ctx.call_sub_orchestrator(fan, input.fan),
        ctx.call_sub_orchestrator(sleepy, input.timers),
    ];
    let outputs = ctx.join_all(children).await?;
    Ok(outputs.into_iter().fold(chained, u64::wrapping_add))
}

fn event_name(index: u32) -> String {
    format!("e{index}")
}

/// Waits for events `e0`, `e1`, ... in turn: each payload, and an activity's result on it.
#[orchestrator]
async fn waiter(ctx: OrchestrationContext, events: u32) -> Result<Vec<[u64; 2]>, Error> {
    let mut received = Vec::new();
    for index in 0..events {
        let payload: u64 = ctx.wait_for_event(event_name(index)).await?;
        received.push([payload, ctx.call_activity(step, payload).await?]);
    }
    Ok(received)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CountInput {
    counter: String,
    first_op: u64,
    amounts: Vec<i64>,
    pause_ms: u64,
}

/// Adds to a counter, alternating awaited calls and signals, with a timer in between.
#[orchestrator]
async fn counting(ctx: OrchestrationContext, input: CountInput) -> Result<i64, Error> {
    for (index, amount) in input.amounts.iter().enumerate() {
        let op = input.first_op + index as u64;
        let counter = ctx.entity::<Counter>(&input.counter);
        if index.is_multiple_of(2) {
            counter.add(op, *amount).await?;
        } else {
            counter.signal().add(op, *amount);
        }
        if index == 1 {
            ctx.sleep(Duration::from_millis(input.pause_ms)).await?;
        }
    }
    Ok(input.amounts.iter().sum())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TransferInput {
    from: String,
    to: String,
    amount: i64,
    op: u64,
}

/// Moves money between two accounts inside a critical section, an activity in between.
#[orchestrator]
async fn transfer(ctx: OrchestrationContext, t: TransferInput) -> Result<i64, Error> {
    let from = ctx.entity_id::<Account>(&t.from)?;
    let to = ctx.entity_id::<Account>(&t.to)?;
    let _lock = ctx.lock_entities(&[from, to]).await?;
    ctx.entity::<Account>(&t.from)
        .withdraw(t.op * 2, t.amount)
        .await?;
    ctx.call_activity(step, t.op).await?;
    ctx.entity::<Account>(&t.to)
        .deposit(t.op * 2 + 1, t.amount)
        .await?;
    Ok(t.amount)
}

/// Calls the flaky activity with retries on durable timers; giving up is an output too.
#[orchestrator]
async fn retrying(ctx: OrchestrationContext, x: u64) -> Result<String, Error> {
    let policy = RetryPolicy {
        max_attempts: 5,
        first_interval: Duration::from_millis(5),
        backoff_coefficient: 2.0,
        max_interval: Duration::from_millis(40),
        ..RetryPolicy::default()
    };
    Ok(match ctx.call_activity_with_retry(flaky, x, policy).await {
        Ok(value) => format!("ok {value}"),
        Err(error) => format!("gave up: {error}"),
    })
}

fn register(builder: durable::RuntimeBuilder) -> durable::RuntimeBuilder {
    builder
        .register(step)
        .register(flaky)
        .register(chain)
        .register(fan)
        .register(sleepy)
        .register(nested)
        .register(waiter)
        .register(counting)
        .register(transfer)
        .register(retrying)
        .register_entity::<Counter>()
        .register_entity::<Account>()
}

// ---------------------------------------------------------------------------------------
// The plan: which instances, with which inputs, released in which generation.

/// SplitMix64: small, seedable, and the same everywhere.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high` (the modulo bias is negligible at these sizes).
    fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        low + self.next_u64() % (high - low + 1)
    }
}

#[derive(Clone, Debug)]
enum Work {
    Chain(ChainInput),
    Fan(FanInput),
    Parent(ParentInput),
    Timers(TimersInput),
    /// The payloads of the events `e0`, `e1`, ... that the driver's schedule raises.
    Waiter(Vec<u64>),
    Count(CountInput),
    Transfer(TransferInput),
    Retry(u64),
}

#[derive(Clone, Debug)]
struct Item {
    id: String,
    batch: u32,
    work: Work,
}

/// The whole workload of a campaign, a function of the seed and the number of kills: a
/// batch per generation, so that every kill finds fresh work to land on.
struct Plan {
    kills: u32,
    items: Vec<Item>,
}

impl Plan {
    fn new(seed: u64, kills: u32) -> Plan {
        let mut rng = Prng::new(seed ^ 0x00c0_ffee_d0d0_cafe);
        let mut ops = 0;
        let mut items = Vec::new();
        for batch in 0..=kills {
            items.extend(batch_items(batch, &mut rng, &mut ops));
        }
        Plan { kills, items }
    }

    /// The generation that raises event `index` for a waiter of `batch` (started by
    /// generation `batch`): one per generation after that, all by the last generation.
    fn event_release(&self, batch: u32, index: u32) -> u32 {
        (batch + 1 + index).min(self.kills)
    }

    fn released(&self, generation: u32) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .filter(move |item| item.batch <= generation)
    }
}

fn delays(rng: &mut Prng, count: usize) -> Vec<u64> {
    (0..count).map(|_| rng.range(0, 200)).collect()
}

fn chain_input(rng: &mut Prng, lengths: (u64, u64)) -> ChainInput {
    ChainInput {
        start: rng.range(0, 1_000_000),
        length: rng.range(lengths.0, lengths.1) as u32,
    }
}

/// One batch: 19 instances (and 3 sub-orchestrations), about 200 activities.
fn batch_items(batch: u32, rng: &mut Prng, ops: &mut u64) -> Vec<Item> {
    let mut work = Vec::new();
    for _ in 0..3 {
        work.push(("chain", Work::Chain(chain_input(rng, (8, 16)))));
    }
    let fan_input = |rng: &mut Prng, width| FanInput {
        base: rng.range(0, 1_000_000),
        width,
    };
    work.push(("fan", Work::Fan(fan_input(rng, FAN_WIDTH))));
    let parent = ParentInput {
        chain: chain_input(rng, (4, 8)),
        fan: fan_input(rng, 30),
        timers: TimersInput {
            delays_ms: delays(rng, 2),
            value: rng.range(0, 1_000_000),
        },
    };
    work.push(("parent", Work::Parent(parent)));
    for _ in 0..2 {
        let delays_ms = delays(rng, 3);
        let value = rng.range(0, 1_000_000);
        work.push(("timers", Work::Timers(TimersInput { delays_ms, value })));
    }
    for _ in 0..2 {
        let payloads = (0..EVENTS_PER_WAITER)
            .map(|_| rng.range(0, 1_000_000))
            .collect();
        work.push(("waiter", Work::Waiter(payloads)));
    }
    for _ in 0..3 {
        let amounts: Vec<i64> = (0..4).map(|_| rng.range(1, 100) as i64).collect();
        let input = CountInput {
            counter: format!("ctr-{}", rng.range(0, COUNTERS - 1)),
            first_op: *ops,
            pause_ms: rng.range(0, 50),
            amounts,
        };
        *ops += input.amounts.len() as u64;
        work.push(("count", Work::Count(input)));
    }
    for _ in 0..4 {
        let from = rng.range(0, ACCOUNTS - 1);
        let to = (from + rng.range(1, ACCOUNTS - 1)) % ACCOUNTS;
        let input = TransferInput {
            from: format!("acct-{from}"),
            to: format!("acct-{to}"),
            amount: rng.range(1, 100) as i64,
            op: *ops,
        };
        *ops += 1;
        work.push(("transfer", Work::Transfer(input)));
    }
    for _ in 0..3 {
        work.push(("retry", Work::Retry(rng.range(0, 1_000_000))));
    }
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    work.into_iter()
        .map(|(kind, work)| {
            let index = seen.entry(kind).or_default();
            *index += 1;
            Item {
                id: format!("b{batch}-{kind}-{}", *index - 1),
                batch,
                work,
            }
        })
        .collect()
}

async fn start(client: &Client, item: &Item) -> Result<(), ClientError> {
    let id = item.id.as_str();
    match &item.work {
        Work::Chain(input) => client
            .start_with_id(chain, id, input.clone())
            .await
            .map(drop),
        Work::Fan(input) => client.start_with_id(fan, id, input.clone()).await.map(drop),
        Work::Parent(input) => client
            .start_with_id(nested, id, input.clone())
            .await
            .map(drop),
        Work::Timers(input) => client
            .start_with_id(sleepy, id, input.clone())
            .await
            .map(drop),
        Work::Waiter(payloads) => {
            let events = payloads.len() as u32;
            client.start_with_id(waiter, id, events).await.map(drop)
        }
        Work::Count(input) => client
            .start_with_id(counting, id, input.clone())
            .await
            .map(drop),
        Work::Transfer(input) => {
            let input = input.clone();
            client.start_with_id(transfer, id, input).await.map(drop)
        }
        Work::Retry(x) => client.start_with_id(retrying, id, *x).await.map(drop),
    }
}

// ---------------------------------------------------------------------------------------
// What a crash-free run must give, computed from the inputs.

fn chain_output(input: &ChainInput) -> u64 {
    (0..input.length).fold(input.start, |value, _| mix(value))
}

fn fan_output(input: &FanInput) -> u64 {
    (0..input.width)
        .map(|i| mix(input.base + u64::from(i)))
        .fold(0, u64::wrapping_add)
}

fn timers_output(input: &TimersInput) -> u64 {
    input
        .delays_ms
        .iter()
        .fold(input.value, |value, _| mix(value))
}

/// The output an item must end with; `None` where only the reference run knows (the
/// retries, whose failing attempts depend on task ids the engine assigns).
fn expected_output(work: &Work) -> Option<Value> {
    let value = match work {
        Work::Chain(input) => serde_json::json!(chain_output(input)),
        Work::Fan(input) => serde_json::json!(fan_output(input)),
        Work::Parent(input) => serde_json::json!(
            chain_output(&input.chain)
                .wrapping_add(fan_output(&input.fan))
                .wrapping_add(timers_output(&input.timers))
        ),
        Work::Timers(input) => serde_json::json!(timers_output(input)),
        Work::Waiter(payloads) => {
            let pairs: Vec<[u64; 2]> = payloads.iter().map(|p| [*p, mix(*p)]).collect();
            serde_json::json!(pairs)
        }
        Work::Count(input) => serde_json::json!(input.amounts.iter().sum::<i64>()),
        Work::Transfer(input) => serde_json::json!(input.amount),
        Work::Retry(_) => return None,
    };
    Some(value)
}

fn to_value(state: &impl Serialize) -> Value {
    serde_json::to_value(state).expect("entity states are JSON")
}

/// Every entity's state after the whole workload, keyed `@name@key`.
fn expected_entities(plan: &Plan) -> BTreeMap<String, Value> {
    let mut counters: BTreeMap<String, Counter> = BTreeMap::new();
    let mut accounts: BTreeMap<String, Account> = BTreeMap::new();
    for item in &plan.items {
        match &item.work {
            Work::Count(input) => {
                let counter = counters.entry(input.counter.clone()).or_default();
                for (index, amount) in input.amounts.iter().enumerate() {
                    counter.add(input.first_op + index as u64, *amount);
                }
            }
            Work::Transfer(t) => {
                accounts
                    .entry(t.from.clone())
                    .or_default()
                    .apply(t.op * 2, -t.amount);
                accounts
                    .entry(t.to.clone())
                    .or_default()
                    .apply(t.op * 2 + 1, t.amount);
            }
            _ => {}
        }
    }
    let counters = counters
        .iter()
        .map(|(key, state)| (format!("@counter@{key}"), to_value(state)));
    let accounts = accounts
        .iter()
        .map(|(key, state)| (format!("@account@{key}"), to_value(state)));
    counters.chain(accounts).collect()
}

// ---------------------------------------------------------------------------------------
// The child: one incarnation over the store, killed or (the last) run to the end.

#[derive(Serialize, Deserialize)]
struct ChildConfig {
    dir: PathBuf,
    generation: u32,
    seed: u64,
    kills: u32,
}

/// The files of a campaign, all in one directory.
struct Files {
    store: PathBuf,
    /// `generation|activity|idempotency key`: one line per activity run.
    runs: SideEffectLog,
    /// `generation|key`: the completions in the store when that generation began.
    committed: SideEffectLog,
    /// Instances that had ended when some generation began (their history is final).
    ended: SideEffectLog,
    /// `raising|generation|instance|index` before `raise_event`, `acked|...` once it
    /// returned, `lost|...` when an acknowledged event was missing from the history at a
    /// later start.
    events: SideEffectLog,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            store: dir.join("store"),
            runs: SideEffectLog::new(dir.join("runs.log")),
            committed: SideEffectLog::new(dir.join("committed.log")),
            ended: SideEffectLog::new(dir.join("ended.log")),
            events: SideEffectLog::new(dir.join("events.log")),
        }
    }
}

fn child(config: &str) -> ExitCode {
    let config: ChildConfig = serde_json::from_str(config).expect("the child's configuration");
    let files = Files::new(&config.dir);
    let generation = config.generation;
    let recorder = Recorder {
        log: files.runs.clone(),
        who: generation.to_string(),
        probe: None,
    };
    assert!(
        RUNS.set(recorder).is_ok(),
        "set once, before the runtime starts"
    );
    let plan = Plan::new(config.seed, config.kills);
    let store =
        Arc::new(FjallStore::open(&files.store, Durability::Fsync).expect("open the store"));
    let ended = record_committed(&*store, &files, generation);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    tokio.block_on(async {
        let runtime = register(Runtime::builder().store(store.clone()))
            .start()
            .await
            .expect("the runtime starts over the store");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{READY}")
            .and_then(|()| stdout.flush())
            .expect("report ready");
        let client = runtime.client();
        let released: Vec<&Item> = plan
            .released(generation)
            .filter(|item| !ended.contains(&item.id))
            .collect();
        for item in &released {
            if client.status(&item.id).await.expect("status").is_none() {
                start(&client, item).await.expect("start");
            }
        }
        raise_events(&client, &plan, &released, generation, &files.events).await;
        if generation < plan.kills {
            // Work on until killed: the rest of the workload is not released yet.
            std::future::pending::<()>().await;
        }
        wait_for_all(&client, &plan.items).await;
        wait_until_drained(&*store).await;
        runtime.shutdown().await;
    });
    ExitCode::SUCCESS
}

/// Before the runtime starts (so before any activity runs): appends the activity
/// completions the store holds to `committed`, reading each instance's history until it
/// has ended. Returns the ended instances.
fn record_committed(store: &dyn Store, files: &Files, generation: u32) -> BTreeSet<String> {
    let mut ended: BTreeSet<String> = files.ended.lines().into_iter().collect();
    for record in all_instances(store) {
        if ended.contains(record.id.as_str()) {
            continue;
        }
        let history = store
            .history(&record.id, record.execution)
            .expect("read a history");
        let lines: Vec<String> = completed_tasks(&record, &history)
            .into_iter()
            .map(|key| format!("{generation}|{key}"))
            .collect();
        if !lines.is_empty() {
            files.committed.append(&lines.join("\n"));
        }
        if record.status.is_terminal() {
            files.ended.append(record.id.as_str());
            ended.insert(record.id.to_string());
        }
    }
    ended
}

/// Raises the events this generation releases that the waiters' histories do not hold.
/// An event acknowledged by an earlier generation but missing from the history was lost:
/// that is written down (the driver fails on it) and the event raised again.
async fn raise_events(
    client: &Client,
    plan: &Plan,
    released: &[&Item],
    generation: u32,
    log: &SideEffectLog,
) {
    let acknowledged: BTreeSet<(String, u32)> = log
        .lines()
        .iter()
        .filter_map(|line| parse_event_line(line).filter(|e| e.0 == "acked"))
        .map(|(_, _, id, index)| (id, index))
        .collect();
    for item in released {
        let Work::Waiter(payloads) = &item.work else {
            continue;
        };
        let due: Vec<u32> = (0..payloads.len() as u32)
            .filter(|index| plan.event_release(item.batch, *index) <= generation)
            .collect();
        if due.is_empty() {
            continue;
        }
        let status = client
            .status_with_history(&item.id)
            .await
            .expect("status")
            .expect("started above");
        if status.is_ended() {
            continue;
        }
        let landed = raised_events(status.history.as_deref().unwrap_or_default());
        for index in due {
            let name = event_name(index);
            if landed.contains_key(&name) {
                continue;
            }
            if acknowledged.contains(&(item.id.clone(), index)) {
                log.append(&format!("lost|{generation}|{}|{index}", item.id));
            }
            let payload = payloads[index as usize];
            log.append(&format!("raising|{generation}|{}|{index}", item.id));
            client
                .raise_event(&item.id, name, payload)
                .await
                .expect("raise an event");
            log.append(&format!("acked|{generation}|{}|{index}", item.id));
        }
    }
}

fn parse_event_line(line: &str) -> Option<(String, u32, String, u32)> {
    let mut parts = line.split('|');
    let kind = parts.next()?.to_owned();
    let generation = parts.next()?.parse().ok()?;
    let id = parts.next()?.to_owned();
    let index = parts.next()?.parse().ok()?;
    Some((kind, generation, id, index))
}

async fn wait_for_all(client: &Client, items: &[Item]) {
    for item in items {
        client
            .wait_for_completion(&item.id, FINISH_TIMEOUT)
            .await
            .unwrap_or_else(|error| panic!("{} did not end: {error}", item.id));
    }
}

/// Waits until nothing is left to run: no inbox message (signals sent by an orchestration's
/// last turn, lock releases), activity or timer, and no entity locked.
async fn wait_until_drained(store: &dyn Store) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leftovers(store).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What is left to run in a store, described.
fn leftovers(store: &dyn Store) -> Vec<String> {
    let mut left = Vec::new();
    let inbox = store.scan_inbox(None, 10).expect("scan the inbox");
    left.extend(
        inbox.iter().map(|(key, message)| {
            format!("inbox message for {}: {:?}", key.instance, message.body)
        }),
    );
    let activities = store.scan_activities(None, 10).expect("scan activities");
    left.extend(activities.iter().map(|item| {
        format!(
            "activity {}:{}:{}",
            item.instance, item.execution, item.task
        )
    }));
    let timers = store.scan_timers(None, 10).expect("scan timers");
    left.extend(timers.iter().map(|timer| {
        format!(
            "timer {}:{}:{:?}",
            timer.instance, timer.execution, timer.purpose
        )
    }));
    for record in all_entities(store) {
        if let Some(holder) = &record.lock {
            left.push(format!("{} locked by {}", record.id, holder.instance));
        }
    }
    left
}

// ---------------------------------------------------------------------------------------
// Reading a store.

fn all_instances(store: &dyn Store) -> Vec<InstanceRecord> {
    let mut records = Vec::new();
    let mut after: Option<InstanceId> = None;
    loop {
        let page = store
            .list_instances(&InstanceQuery::default(), after.as_ref(), 1_000)
            .expect("list instances");
        let Some(last) = page.last() else {
            return records;
        };
        after = Some(last.id.clone());
        records.extend(page);
    }
}

fn all_entities(store: &dyn Store) -> Vec<EntityRecord> {
    let mut records = Vec::new();
    loop {
        let after = records
            .last()
            .map(|record: &EntityRecord| record.id.clone());
        let page = store
            .list_entities(None, after.as_ref(), 1_000)
            .expect("list entities");
        if page.is_empty() {
            return records;
        }
        records.extend(page);
    }
}

/// The idempotency keys (`instance:execution:task`) of the activity results in a history.
fn completed_tasks(record: &InstanceRecord, history: &[HistoryEvent]) -> Vec<String> {
    history
        .iter()
        .filter_map(|event| match event {
            HistoryEvent::TaskCompleted { id, .. } | HistoryEvent::TaskFailed { id, .. } => {
                Some(format!("{}:{}:{}", record.id, record.execution, id))
            }
            _ => None,
        })
        .collect()
}

/// How many times each event name was raised into a history.
fn raised_events(history: &[HistoryEvent]) -> BTreeMap<String, u32> {
    let mut raised = BTreeMap::new();
    for event in history {
        if let HistoryEvent::EventRaised { name, .. } = event {
            *raised.entry(name.clone()).or_default() += 1;
        }
    }
    raised
}

/// Everything the checks read from one store.
struct Snapshot {
    instances: Vec<InstanceRecord>,
    histories: BTreeMap<String, Vec<HistoryEvent>>,
    entities: Vec<EntityRecord>,
    leftovers: Vec<String>,
}

fn snapshot(store: &dyn Store) -> Snapshot {
    let instances = all_instances(store);
    let histories = instances
        .iter()
        .map(|record| {
            let history = store
                .history(&record.id, record.execution)
                .expect("read a history");
            (record.id.to_string(), history)
        })
        .collect();
    Snapshot {
        instances,
        histories,
        entities: all_entities(store),
        leftovers: leftovers(store),
    }
}

/// A sub-orchestration's id is `parent:execution:task`; execution ids depend on the
/// order of starts, so comparisons across runs drop them: `parent:task`.
fn canonical_id(id: &str) -> String {
    id.split(':')
        .enumerate()
        .filter(|(index, _)| *index == 0 || index % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join(":")
}

/// How an instance ended: status, output, failure.
type Outcome = (RuntimeStatus, Option<Value>, Option<String>);

/// How each instance ended, by canonical id.
fn outcomes(snapshot: &Snapshot) -> BTreeMap<String, Outcome> {
    snapshot
        .instances
        .iter()
        .map(|record| {
            let output = record
                .output
                .as_ref()
                .map(|json| serde_json::from_str(json.as_str()).expect("outputs are JSON"));
            let failure = record
                .failure
                .as_ref()
                .map(|failure| format!("{failure:?}"));
            (
                canonical_id(record.id.as_str()),
                (record.status, output, failure),
            )
        })
        .collect()
}

fn entity_states(snapshot: &Snapshot) -> BTreeMap<String, Option<Value>> {
    snapshot
        .entities
        .iter()
        .map(|record| {
            let state = record
                .state
                .as_ref()
                .map(|json| serde_json::from_str(json.as_str()).expect("entity states are JSON"));
            (record.id.to_string(), state)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The crash-free reference run, in memory, in this process.

fn reference_run(plan: &Plan) -> Snapshot {
    let store = Arc::new(MemoryStore::new());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    tokio.block_on(async {
        let runtime = register(Runtime::builder().store(store.clone()))
            .start()
            .await
            .expect("the reference runtime starts");
        let client = runtime.client();
        for item in &plan.items {
            start(&client, item).await.expect("start");
        }
        for item in &plan.items {
            if let Work::Waiter(payloads) = &item.work {
                for (index, payload) in payloads.iter().enumerate() {
                    client
                        .raise_event(&item.id, event_name(index as u32), *payload)
                        .await
                        .expect("raise an event");
                }
            }
        }
        wait_for_all(&client, &plan.items).await;
        wait_until_drained(&*store).await;
        runtime.shutdown().await;
    });
    snapshot(&*store)
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Counts for the summary line.
#[derive(Default)]
struct Summary {
    instances: usize,
    kills_mid_activity: usize,
    runs: usize,
    tasks_run: usize,
    committed: usize,
    reruns: usize,
    rerun_tasks: usize,
    events_raised: usize,
    events_raised_again: usize,
    timers_fired: usize,
    timers_cancelled: usize,
}

fn verify(plan: &Plan, crash: &Snapshot, reference: &Snapshot, files: &Files) -> Summary {
    assert!(
        reference.leftovers.is_empty(),
        "the crash-free run left work behind: {:?}",
        reference.leftovers
    );
    assert!(
        crash.leftovers.is_empty(),
        "work left after the last generation (stuck): {:?}",
        crash.leftovers
    );
    check_outcomes(plan, crash, reference);
    check_entities(plan, crash, reference);
    check_histories(plan, reference, &mut Summary::default());
    let mut summary = Summary {
        instances: crash.instances.len(),
        ..Summary::default()
    };
    check_histories(plan, crash, &mut summary);
    check_runs(crash, files, plan.kills, &mut summary);
    check_retry_keys(files);
    check_events(files, &mut summary);
    summary
}

/// Every instance (sub-orchestrations too) completed, as in the crash-free run, with the
/// output computed from its input.
fn check_outcomes(plan: &Plan, crash: &Snapshot, reference: &Snapshot) {
    let ours = outcomes(crash);
    let theirs = outcomes(reference);
    let missing: Vec<&String> = theirs.keys().filter(|id| !ours.contains_key(*id)).collect();
    let extra: Vec<&String> = ours.keys().filter(|id| !theirs.contains_key(*id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the instances differ from the crash-free run's: missing {missing:?}, extra {extra:?}"
    );
    for (id, outcome) in &ours {
        assert_eq!(
            outcome.0,
            RuntimeStatus::Completed,
            "{id} did not complete: {outcome:?}"
        );
        assert_eq!(
            outcome, &theirs[id],
            "{id} ended differently from the crash-free run (left: crash loop, right: crash-free)"
        );
    }
    for item in &plan.items {
        if let Some(expected) = expected_output(&item.work) {
            let outcome: &Outcome = &ours[&item.id];
            assert_eq!(
                outcome.1.as_ref(),
                Some(&expected),
                "{}: the output is not the one its input implies",
                item.id
            );
        }
    }
}

/// Every entity holds the crash-free run's state, which is the one the operations imply:
/// each operation applied exactly once, counter sums and transfer totals exact.
fn check_entities(plan: &Plan, crash: &Snapshot, reference: &Snapshot) {
    let ours = entity_states(crash);
    let theirs = entity_states(reference);
    let expected = expected_entities(plan);
    for (id, state) in &expected {
        assert_eq!(
            theirs.get(id),
            Some(&Some(state.clone())),
            "{id}: the crash-free run's state is not the one the operations imply"
        );
        assert_eq!(
            ours.get(id),
            Some(&Some(state.clone())),
            "{id}: the state differs from the crash-free run's (left: crash loop)"
        );
    }
    let unexpected: Vec<&String> = ours
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "entities nobody used: {unexpected:?}"
    );
    let total: i64 = crash
        .entities
        .iter()
        .filter(|record| record.id.name() == "Account")
        .filter_map(|record| record.state.as_ref())
        .map(|json| json.decode::<Account>().expect("an account").balance)
        .sum();
    assert_eq!(
        total, 0,
        "transfers must conserve the total of the balances"
    );
}

/// The open and resolved tasks of one history, by kind.
#[derive(Default)]
struct Tasks {
    open: BTreeMap<(&'static str, u64), u32>,
}

impl Tasks {
    fn open(&mut self, id: &str, kind: &'static str, task: u64) {
        let previous = self.open.insert((kind, task), 0);
        assert!(
            previous.is_none(),
            "{id}: {kind} task {task} scheduled twice"
        );
    }

    fn resolve(&mut self, id: &str, kind: &'static str, task: u64) {
        let results = self
            .open
            .get_mut(&(kind, task))
            .unwrap_or_else(|| panic!("{id}: a result for {kind} task {task}, never scheduled"));
        *results += 1;
        assert_eq!(*results, 1, "{id}: {kind} task {task} has two results");
    }
}

/// Each history on its own: every task resolved exactly once, every timer fired at most
/// once and not before it was due, and events only where the driver raised them, once each.
fn check_histories(plan: &Plan, snapshot: &Snapshot, summary: &mut Summary) {
    let waiters: BTreeMap<&str, usize> = plan
        .items
        .iter()
        .filter_map(|item| match &item.work {
            Work::Waiter(payloads) => Some((item.id.as_str(), payloads.len())),
            _ => None,
        })
        .collect();
    for (id, history) in &snapshot.histories {
        check_tasks_and_timers(id, history, summary);
        let raised = raised_events(history);
        let expected: BTreeMap<String, u32> = (0..waiters.get(id.as_str()).copied().unwrap_or(0))
            .map(|index| (event_name(index as u32), 1))
            .collect();
        assert_eq!(raised, expected, "{id}: events in the history");
    }
}

fn check_tasks_and_timers(id: &str, history: &[HistoryEvent], summary: &mut Summary) {
    let mut tasks = Tasks::default();
    let mut timers: BTreeMap<u64, (Timestamp, u32, u32)> = BTreeMap::new();
    let mut turn = Timestamp::EPOCH;
    for event in history {
        match event {
            HistoryEvent::OrchestratorStarted { at } => turn = *at,
            HistoryEvent::TaskScheduled { id: task, .. } => tasks.open(id, "activity", task.0),
            HistoryEvent::TaskCompleted { id: task, .. }
            | HistoryEvent::TaskFailed { id: task, .. } => tasks.resolve(id, "activity", task.0),
            HistoryEvent::SubOrchestrationCreated { id: task, .. } => {
                tasks.open(id, "sub-orchestration", task.0);
            }
            HistoryEvent::SubOrchestrationCompleted { id: task, .. }
            | HistoryEvent::SubOrchestrationFailed { id: task, .. } => {
                tasks.resolve(id, "sub-orchestration", task.0);
            }
            HistoryEvent::EntityCalled { id: task, .. } => tasks.open(id, "entity call", task.0),
            HistoryEvent::EntityCompleted { id: task, .. }
            | HistoryEvent::EntityFailed { id: task, .. } => {
                tasks.resolve(id, "entity call", task.0);
            }
            HistoryEvent::LocksRequested { id: task, .. } => tasks.open(id, "lock", task.0),
            HistoryEvent::LocksGranted { id: task, .. } => tasks.resolve(id, "lock", task.0),
            HistoryEvent::TimerCreated { id: task, fire_at } => {
                let previous = timers.insert(task.0, (*fire_at, 0, 0));
                assert!(previous.is_none(), "{id}: timer {task} created twice");
            }
            HistoryEvent::TimerFired { id: task } => {
                let timer = timers
                    .get_mut(&task.0)
                    .unwrap_or_else(|| panic!("{id}: timer {task} fired, never created"));
                timer.1 += 1;
                assert!(
                    turn >= timer.0,
                    "{id}: timer {task} due at {:?} fired early, in the turn of {turn:?}",
                    timer.0
                );
            }
            HistoryEvent::TimerCancelled { id: task } => {
                if let Some(timer) = timers.get_mut(&task.0) {
                    timer.2 += 1;
                }
            }
            _ => {}
        }
    }
    for ((kind, task), results) in &tasks.open {
        assert_eq!(*results, 1, "{id}: {kind} task {task} never resolved");
    }
    for (task, (_, fired, cancelled)) in &timers {
        assert!(
            fired + cancelled <= 1,
            "{id}: timer {task} fired {fired} times and was cancelled {cancelled} times"
        );
        summary.timers_fired += *fired as usize;
        summary.timers_cancelled += *cancelled as usize;
    }
}

/// The activity runs against what was committed when: each task ran at least once, only
/// after it was scheduled in a committed history, at most once per generation, and never in
/// a generation that began with its completion in the store.
fn check_runs(crash: &Snapshot, files: &Files, kills: u32, summary: &mut Summary) {
    let runs = activity_runs(&files.runs);
    let committed_at = first_committed(&files.committed);
    let (scheduled, completed) = final_tasks(crash);
    for key in &scheduled {
        assert!(runs.contains_key(key), "activity {key} never ran");
    }
    for (key, generations) in &runs {
        assert!(
            scheduled.contains(key),
            "activity {key} ran without being scheduled in a committed history"
        );
        let distinct: BTreeSet<&u32> = generations.iter().collect();
        assert_eq!(
            distinct.len(),
            generations.len(),
            "activity {key} ran twice in one process: generations {generations:?}"
        );
        if let Some(committed) = committed_at.get(key) {
            assert!(
                generations.iter().all(|g| g < committed),
                "activity {key} ran again (generations {generations:?}) although its completion \
                 was committed before generation {committed} began"
            );
        }
    }
    for (key, generation) in &committed_at {
        assert!(
            completed.contains(key),
            "the completion of {key}, committed before generation {generation}, is gone"
        );
    }
    // A kill interrupted activities if something that ran before it was not committed when
    // the next generation began.
    let interrupted: BTreeSet<u32> = runs
        .iter()
        .flat_map(|(key, generations)| {
            let committed = committed_at.get(key).copied();
            generations
                .iter()
                .copied()
                .filter(move |g| *g < kills && committed.is_none_or(|c| c > g + 1))
        })
        .collect();
    summary.kills_mid_activity = interrupted.len();
    summary.runs = runs.values().map(Vec::len).sum();
    summary.tasks_run = runs.len();
    summary.committed = completed.len();
    summary.reruns = summary.runs - summary.tasks_run;
    summary.rerun_tasks = runs.values().filter(|g| g.len() > 1).count();
}

/// The generations that ran each activity task, by idempotency key.
fn activity_runs(log: &SideEffectLog) -> BTreeMap<String, Vec<u32>> {
    let mut runs: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for line in log.lines() {
        let mut parts = line.splitn(4, '|');
        let (Some(generation), Some(_name), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("malformed run line {line:?}");
        };
        let generation = generation.parse().expect("a generation");
        runs.entry(key.to_owned()).or_default().push(generation);
    }
    runs
}

/// Every attempt of a retried call, in every process that ran one, saw the same
/// idempotency key: its first attempt's task. (The only retried call of an execution is
/// `retrying`'s, so all `flaky` runs of one execution are its attempts.)
fn check_retry_keys(files: &Files) {
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in files.runs.lines() {
        let parts: Vec<&str> = line.split('|').collect();
        // PostgreSQL workers add what the run found in the store: ignored here.
        let [_who, "flaky", task, key, ..] = parts[..] else {
            continue;
        };
        let execution = task
            .rsplit_once(':')
            .map_or(task, |(execution, _)| execution);
        keys.entry(execution.to_owned())
            .or_default()
            .insert(key.to_owned());
    }
    assert!(!keys.is_empty(), "no retried call ran");
    for (execution, keys) in &keys {
        assert_eq!(
            keys.len(),
            1,
            "the attempts of one retried call in {execution} saw different idempotency keys: {keys:?}"
        );
    }
}

/// The first generation that began with each completion in the store.
fn first_committed(log: &SideEffectLog) -> BTreeMap<String, u32> {
    let mut committed_at: BTreeMap<String, u32> = BTreeMap::new();
    for line in log.lines() {
        let (generation, key) = line.split_once('|').expect("generation|key");
        let generation: u32 = generation.parse().expect("a generation");
        let first = committed_at.entry(key.to_owned()).or_insert(generation);
        *first = (*first).min(generation);
    }
    committed_at
}

/// The activity tasks of the final histories: scheduled, and with a result.
fn final_tasks(snapshot: &Snapshot) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut scheduled = BTreeSet::new();
    let mut completed = BTreeSet::new();
    for record in &snapshot.instances {
        let history = &snapshot.histories[record.id.as_str()];
        completed.extend(completed_tasks(record, history));
        scheduled.extend(history.iter().filter_map(|event| match event {
            HistoryEvent::TaskScheduled { id, .. } => {
                Some(format!("{}:{}:{}", record.id, record.execution, id))
            }
            _ => None,
        }));
    }
    (scheduled, completed)
}

/// No acknowledged event went missing; counts the raises.
fn check_events(files: &Files, summary: &mut Summary) {
    let lines: Vec<(String, u32, String, u32)> = files
        .events
        .lines()
        .iter()
        .map(|line| parse_event_line(line).expect("an event line"))
        .collect();
    let lost: Vec<&(String, u32, String, u32)> =
        lines.iter().filter(|line| line.0 == "lost").collect();
    assert!(
        lost.is_empty(),
        "events acknowledged by raise_event but missing from the history at a later start: \
         {lost:?}"
    );
    let raising: Vec<(&String, u32)> = lines
        .iter()
        .filter(|line| line.0 == "raising")
        .map(|line| (&line.2, line.3))
        .collect();
    let distinct: BTreeSet<&(&String, u32)> = raising.iter().collect();
    summary.events_raised = distinct.len();
    summary.events_raised_again = raising.len() - distinct.len();
}

// ---------------------------------------------------------------------------------------
// The driver.

struct Options {
    /// `None`: each test's own number for a plain `cargo test` run.
    kills: Option<u32>,
    seed: u64,
    dir: Option<PathBuf>,
    /// PostgreSQL: how many worker processes, and the bounds of the time between kills.
    workers: u32,
    kill_every_ms: (u64, u64),
    /// PostgreSQL: the workers' lease time to live (`None`: the runtime's default). A short
    /// one makes workers that the machine's load stalls lose their partitions.
    lease_ttl_ms: Option<u64>,
}

/// The campaign's directory: a temporary one, kept (and named) if the campaign fails, or
/// the test's own in the one given with `--dir`, always kept.
struct WorkDir {
    temp: Option<tempfile::TempDir>,
    path: PathBuf,
    seed: u64,
}

impl WorkDir {
    fn new(options: &Options, test: &str) -> WorkDir {
        let (temp, path) = match &options.dir {
            Some(dir) => {
                let dir = dir.join(test);
                std::fs::create_dir_all(&dir).expect("create --dir");
                let empty = std::fs::read_dir(&dir)
                    .expect("read --dir")
                    .next()
                    .is_none();
                assert!(empty, "--dir {} must be empty", dir.display());
                (None, dir)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("crash-loop-")
                    .tempdir()
                    .expect("a temporary directory");
                let path = temp.path().to_owned();
                (Some(temp), path)
            }
        };
        WorkDir {
            temp,
            path,
            seed: options.seed,
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let path = match self.temp.take() {
                Some(temp) => temp.keep(),
                None => self.path.clone(),
            };
            eprintln!(
                "crash loop FAILED with seed {}; its store and logs are in {}",
                self.seed,
                path.display()
            );
        }
    }
}

fn campaign(options: &Options) {
    let began = Instant::now();
    let kills = options.kills.unwrap_or(CI_KILLS);
    println!(
        "crash loop: seed {seed}, {kills} kills (to rerun: cargo test{release} --test \
         crash_loop -- {FJALL_TEST} --exact --seed {seed} --kills {kills})",
        seed = options.seed,
        release = release_flag(),
    );
    let plan = Plan::new(options.seed, kills);
    let reference = reference_run(&plan);
    let reference_time = began.elapsed();
    let workdir = WorkDir::new(options, FJALL_TEST);
    let files = Files::new(&workdir.path);
    let mut rng = Prng::new(options.seed);
    let loop_began = Instant::now();
    for generation in 0..=kills {
        let kill_after = (generation < kills)
            .then(|| Duration::from_millis(rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1)));
        let config = ChildConfig {
            dir: workdir.path.clone(),
            generation,
            seed: options.seed,
            kills,
        };
        run_generation(&config, kill_after, &files);
    }
    let loop_time = loop_began.elapsed();
    let store = FjallStore::open(&files.store, Durability::Fsync).expect("open the store");
    let crash = snapshot(&store);
    let s = verify(&plan, &crash, &reference, &files);
    println!(
        "crash loop: {kills} kills ({mid} interrupted activities), {kills} restarts; \
         {instances} instances ({items} started by the driver), all completed as in the \
         crash-free run; activities: {runs} runs of {tasks} tasks, {committed} committed, \
         {reruns} re-runs ({rerun_tasks} tasks ran more than once, none after its commit); \
         {events} events raised ({again} again after a kill), none lost; {fired} timers \
         fired ({cancelled} cancelled), none twice; seed {seed}; {total:.1} s (crash-free \
         reference {reference:.1} s, crash loop {looped:.1} s)",
        mid = s.kills_mid_activity,
        instances = s.instances,
        items = plan.items.len(),
        runs = s.runs,
        tasks = s.tasks_run,
        committed = s.committed,
        reruns = s.reruns,
        rerun_tasks = s.rerun_tasks,
        events = s.events_raised,
        again = s.events_raised_again,
        fired = s.timers_fired,
        cancelled = s.timers_cancelled,
        seed = options.seed,
        total = began.elapsed().as_secs_f64(),
        reference = reference_time.as_secs_f64(),
        looped = loop_time.as_secs_f64(),
    );
}

/// Runs one child: kills it `kill_after` its report of running, or (the last) waits for it
/// to finish everything.
fn run_generation(config: &ChildConfig, kill_after: Option<Duration>, files: &Files) {
    let generation = config.generation;
    let env = [(
        CHILD_VAR,
        serde_json::to_string(config).expect("the configuration is JSON"),
    )];
    let mut child = spawn_self(&[], &env);
    let lines = stdout_lines(&mut child);
    let ready = loop {
        match lines.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line == READY => break Ok(()),
            Ok(_) => continue,
            Err(error) => break Err(error),
        }
    };
    if let Err(error) = ready {
        let _ = child.kill();
        let status = child.wait().expect("reap the child");
        panic!("generation {generation}: the child did not report running ({error}; {status})");
    }
    match kill_after {
        Some(delay) => {
            std::thread::sleep(delay);
            if let Some(status) = child.try_wait().expect("poll the child") {
                panic!("generation {generation}: the child exited ({status}) before its kill");
            }
            child.kill().expect("SIGKILL the child");
            child.wait().expect("reap the child");
        }
        None => finish(&mut child, files),
    }
}

/// Waits for the last child to finish the workload; if it does not, reports what is stuck.
fn finish(child: &mut Child, files: &Files) {
    let deadline = Instant::now() + FINISH_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("poll the child") {
            assert!(status.success(), "the last generation failed: {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().expect("reap the child");
    let store = FjallStore::open(&files.store, Durability::Fsync).expect("open the store");
    let unfinished: Vec<String> = all_instances(&store)
        .into_iter()
        .filter(|record| !record.status.is_terminal())
        .map(|record| {
            let history = store
                .history(&record.id, record.execution)
                .unwrap_or_default();
            let tail = &history[history.len().saturating_sub(3)..];
            format!("{} ({:?}), last events {tail:?}", record.id, record.status)
        })
        .collect();
    panic!(
        "the last generation did not finish within {FINISH_TIMEOUT:?}: stuck instances \
         {unfinished:#?}; left to run {:#?}",
        leftovers(&store)
    );
}

// ---------------------------------------------------------------------------------------
// Over PostgreSQL: worker processes sharing one schema, one of them killed every few
// seconds and started again, while the driver starts the batches and raises the events
// through a client of the database alone.

/// The schema the workers share.
const SCHEMA: &str = "crash_loop";
/// Kills and workers in a plain `cargo test` run.
const PG_CI_KILLS: u32 = 12;
const PG_CI_WORKERS: u32 = 3;
/// Milliseconds from one kill to the next, drawn uniformly: mostly past a lease's time to
/// live (1.5 s), so that the killed worker's partitions fail over to the survivors before
/// the restarted worker takes its fair share back, and the next kill finds them settled.
const KILL_EVERY_MS: (u64, u64) = (1_000, 5_000);
/// How often the failover watcher reads who owns the partitions.
const OWNERS_POLL: Duration = Duration::from_millis(50);
/// A long campaign says how far it is every this many kills.
const PROGRESS_EVERY: u32 = 50;
/// How long a worker gets to stop gracefully at the end, and the store to drain.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A worker process's configuration.
#[derive(Serialize, Deserialize)]
struct WorkerConfig {
    dir: PathBuf,
    url: String,
    /// `w{slot}.{incarnation}`: which worker, and which of its processes.
    who: String,
    /// The partition leases' time to live, if not the runtime's default.
    lease_ttl_ms: Option<u64>,
}

/// The shared schema as a [`Store`], for reads (a worker's probe, the driver's checks).
fn open_schema(url: &str) -> PostgresStore {
    let engine = durable::store::PostgresEngine::connect_shared(url, SCHEMA)
        .unwrap_or_else(|error| panic!("cannot connect to schema {SCHEMA}: {error}"));
    let place = PathBuf::from(format!("postgres schema {SCHEMA}"));
    durable::store::KvStore::with_engine(engine, &place)
        .unwrap_or_else(|error| panic!("cannot read schema {SCHEMA}: {error}"))
}

/// A worker process: a runtime on the shared schema, running until the driver kills it
/// or closes its stdin (then it stops gracefully, handing its partitions over).
fn worker(config: &str) -> ExitCode {
    let config: WorkerConfig = serde_json::from_str(config).expect("the worker's configuration");
    let log = FileLog::new(config.dir.join(format!("worker-{}.log", config.who)));
    tracing::subscriber::set_global_default(log).expect("the worker's only subscriber");
    let recorder = Recorder {
        log: Files::new(&config.dir).runs,
        who: config.who.clone(),
        probe: Some(Arc::new(open_schema(&config.url))),
    };
    assert!(
        RUNS.set(recorder).is_ok(),
        "set once, before the runtime starts"
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    tokio.block_on(async {
        let mut builder = Runtime::builder().postgres_schema(&config.url, SCHEMA);
        if let Some(ttl) = config.lease_ttl_ms {
            builder = builder.lease_ttl(Duration::from_millis(ttl));
        }
        let runtime = register(builder)
            .start()
            .await
            .expect("the worker starts on the schema");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{READY}")
            .and_then(|()| stdout.flush())
            .expect("report ready");
        // Also ends when the driver is gone, so that no worker outlives a campaign.
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())
        })
        .await;
        runtime.shutdown().await;
    });
    ExitCode::SUCCESS
}

/// Milliseconds since the Unix epoch: the time stamp of the campaign's logs.
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// A worker's runtime log (`tracing` events from INFO up: partitions acquired, handed
/// over, lost, fenced commits), one time-stamped line per event, so that a failure can be
/// set against what each worker did when. Also the driver's own log.
struct FileLog {
    file: Mutex<std::fs::File>,
}

impl FileLog {
    fn new(path: PathBuf) -> FileLog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
        FileLog {
            file: Mutex::new(file),
        }
    }

    /// Appends one line, with one `write` (whole lines, even from several threads).
    fn line(&self, text: &str) {
        let line = format!("{} {}\n", unix_ms(), text.replace('\n', " / "));
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = file.write_all(line.as_bytes());
    }
}

impl tracing::Subscriber for FileLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = format!("{} {}", event.metadata().level(), event.metadata().target());
        event.record(&mut LogFields(&mut text));
        self.line(&text);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

struct LogFields<'a>(&'a mut String);

impl tracing::field::Visit for LogFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

/// The driver's handle on a worker process; dropping it kills the process.
struct Worker {
    slot: u32,
    incarnation: u32,
    child: Child,
    /// Closed to stop the worker gracefully.
    stdin: Option<ChildStdin>,
}

impl Worker {
    /// Starts incarnation `incarnation` of worker `slot` and waits until it runs.
    fn start(slot: u32, incarnation: u32, dir: &Path, url: &str, options: &Options) -> Worker {
        let who = format!("w{slot}.{incarnation}");
        let config = WorkerConfig {
            dir: dir.to_owned(),
            url: url.to_owned(),
            who: who.clone(),
            lease_ttl_ms: options.lease_ttl_ms,
        };
        let exe = std::env::current_exe().expect("the test binary knows its path");
        let mut child = std::process::Command::new(exe)
            .env(
                WORKER_VAR,
                serde_json::to_string(&config).expect("the configuration is JSON"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker process");
        let stdin = child.stdin.take();
        let lines = stdout_lines(&mut child);
        let mut worker = Worker {
            slot,
            incarnation,
            child,
            stdin,
        };
        let ready = loop {
            match lines.recv_timeout(READY_TIMEOUT) {
                Ok(line) if line == READY => break Ok(()),
                Ok(_) => continue,
                Err(error) => break Err(error),
            }
        };
        if let Err(error) = ready {
            worker.kill();
            panic!("worker {who} did not report running ({error})");
        }
        worker
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps the process.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes its stdin and waits for it to stop gracefully.
    fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll a worker") {
                assert!(
                    status.success(),
                    "worker w{}.{} failed as it stopped: {status}",
                    self.slot,
                    self.incarnation
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "worker w{}.{} did not stop within {STOP_TIMEOUT:?}",
            self.slot, self.incarnation
        );
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The process id in a worker's name (`host:pid:uuid`, see the runtime's cluster module).
fn owner_pid(worker: &str) -> Option<u32> {
    worker.rsplit(':').nth(1)?.parse().ok()
}

/// A kill whose partitions are not all in live hands again yet.
struct PendingFailover {
    pid: u32,
    killed_at: Instant,
    /// The partitions the killed worker held at its last reading before the kill.
    held: Vec<u16>,
}

/// Watches the partitions' owners on a thread of its own: how long after a kill every
/// partition the killed worker held has a live owner again.
#[derive(Default)]
struct FailoverWatch {
    /// The latest reading: partition -> owner's process id (unexpired leases only).
    owners: BTreeMap<u16, u32>,
    pending: Vec<PendingFailover>,
    /// Kills of a worker that held partitions: `(partitions, time until all had a live
    /// owner again)`.
    done: Vec<(usize, Duration)>,
    /// Kills of a worker that held no partition yet (it had just started).
    empty_handed: u32,
    read_errors: u32,
}

impl FailoverWatch {
    fn spawn(url: &str) -> (Arc<(Mutex<FailoverWatch>, AtomicBool)>, JoinHandle<()>) {
        let shared = Arc::new((Mutex::new(FailoverWatch::default()), AtomicBool::new(false)));
        let engine = durable::store::PostgresEngine::connect_shared(url, SCHEMA)
            .unwrap_or_else(|error| panic!("cannot connect to schema {SCHEMA}: {error}"));
        let watch = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let (state, stop) = &*watch;
            while !stop.load(Ordering::Acquire) {
                let read = engine.owners();
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                match read {
                    Ok(rows) => {
                        state.owners = rows
                            .iter()
                            .filter_map(|(partition, owner, _)| {
                                Some((*partition, owner_pid(owner)?))
                            })
                            .collect();
                        state.settle();
                    }
                    Err(_) => state.read_errors += 1,
                }
                drop(state);
                std::thread::sleep(OWNERS_POLL);
            }
        });
        (shared, thread)
    }

    /// Records a kill of the worker with process id `pid`.
    fn killed(&mut self, pid: u32, killed_at: Instant) {
        let held: Vec<u16> = self
            .owners
            .iter()
            .filter(|(_, owner)| **owner == pid)
            .map(|(partition, _)| *partition)
            .collect();
        if held.is_empty() {
            self.empty_handed += 1;
        } else {
            self.pending.push(PendingFailover {
                pid,
                killed_at,
                held,
            });
        }
    }

    /// Ends the failovers whose partitions all have another owner now.
    fn settle(&mut self) {
        let owners = &self.owners;
        let mut done = Vec::new();
        self.pending.retain(|kill| {
            let over = kill.held.iter().all(|partition| {
                owners
                    .get(partition)
                    .is_some_and(|owner| *owner != kill.pid)
            });
            if over {
                done.push((kill.held.len(), kill.killed_at.elapsed()));
            }
            !over
        });
        self.done.extend(done);
    }
}

/// A trigger that writes down every row put into or taken out of the `messages` table,
/// with a digest of its body, in `messages_audit`: test instrumentation of the throwaway
/// database, so that a message delivered twice can be told from a message sent twice (its
/// body, which names its inbox key or its command's request, inserted twice). Rows of
/// transactions that roll back leave no trace, as the rows themselves.
fn audit_sql() -> String {
    format!(
        "CREATE TABLE \"{SCHEMA}\".messages_audit (
             at timestamptz NOT NULL DEFAULT clock_timestamp(),
             op text NOT NULL,
             partition smallint NOT NULL,
             seq bigint NOT NULL,
             target text NOT NULL,
             body_md5 text NOT NULL,
             txid xid8 NOT NULL DEFAULT pg_current_xact_id()
         );
         CREATE FUNCTION \"{SCHEMA}\".audit_messages() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF TG_OP = 'INSERT' THEN
                 INSERT INTO \"{SCHEMA}\".messages_audit (op, partition, seq, target, body_md5)
                     VALUES ('insert', NEW.partition, NEW.seq, NEW.target, md5(NEW.body));
                 RETURN NEW;
             END IF;
             INSERT INTO \"{SCHEMA}\".messages_audit (op, partition, seq, target, body_md5)
                 VALUES ('delete', OLD.partition, OLD.seq, OLD.target, md5(OLD.body));
             RETURN OLD;
         END $$;
         CREATE TRIGGER audit AFTER INSERT OR DELETE ON \"{SCHEMA}\".messages
             FOR EACH ROW EXECUTE FUNCTION \"{SCHEMA}\".audit_messages();"
    )
}

/// What the driver reads through SQL at the end.
#[derive(Debug)]
struct Tables {
    /// Rows of `messages` (to instances of other partitions, client commands) left.
    messages: Vec<String>,
    /// Answers to commands nobody took.
    replies: i64,
    /// Partition acquisitions over the campaign (the epochs grow by one at each).
    acquisitions: i64,
    /// Messages sent through the table, and those whose body was sent more than once
    /// (from the audit; see [`audit_sql`]).
    sent: i64,
    sent_again: Vec<String>,
}

async fn read_tables(sql: &tokio_postgres::Client) -> Result<Tables, tokio_postgres::Error> {
    let messages = sql
        .query(
            &format!("SELECT partition, seq, target FROM \"{SCHEMA}\".messages ORDER BY 1, 2"),
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let (partition, seq, target): (i16, i64, String) = (row.get(0), row.get(1), row.get(2));
            format!("partition {partition} seq {seq} for {target}")
        })
        .collect();
    let replies = sql
        .query_one(&format!("SELECT count(*) FROM \"{SCHEMA}\".replies"), &[])
        .await?
        .get(0);
    let acquisitions = sql
        .query_one(
            &format!("SELECT coalesce(sum(epoch), 0)::bigint FROM \"{SCHEMA}\".partitions"),
            &[],
        )
        .await?
        .get(0);
    let sent = sql
        .query_one(
            &format!("SELECT count(*) FROM \"{SCHEMA}\".messages_audit WHERE op = 'insert'"),
            &[],
        )
        .await?
        .get(0);
    let sent_again = sql
        .query(
            &format!(
                "SELECT target, count(*), string_agg(partition || '/' || seq, ' ') \
                 FROM \"{SCHEMA}\".messages_audit WHERE op = 'insert' \
                 GROUP BY target, body_md5 HAVING count(*) > 1 ORDER BY 1"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let (target, count, rows): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
            format!("{target}: {count} times (rows {rows})")
        })
        .collect();
    Ok(Tables {
        messages,
        replies,
        acquisitions,
        sent,
        sent_again,
    })
}

/// Starts batch `round` and raises the events due in this round, each once (the driver
/// is never killed: an acknowledged start or event is committed, and none is sent again).
async fn release_round(
    client: &Client,
    plan: &Plan,
    round: u32,
    log: &SideEffectLog,
    driver: &Arc<FileLog>,
) {
    let mut starts = tokio::task::JoinSet::new();
    for item in plan.items.iter().filter(|item| item.batch == round) {
        let (client, item, driver) = (client.clone(), item.clone(), Arc::clone(driver));
        starts.spawn(async move {
            driver.line(&format!(
                "start {} (partition {})",
                item.id,
                partition_of(&item.id)
            ));
            let started = start(&client, &item).await;
            driver.line(&format!("start {}: {started:?}", item.id));
            started
                .unwrap_or_else(|error| panic!("round {round}: cannot start {}: {error}", item.id));
        });
    }
    while let Some(started) = starts.join_next().await {
        started.expect("a start");
    }
    let mut raises = tokio::task::JoinSet::new();
    for item in &plan.items {
        let Work::Waiter(payloads) = &item.work else {
            continue;
        };
        for (index, payload) in (0..).zip(payloads) {
            if item.batch > round || plan.event_release(item.batch, index) != round {
                continue;
            }
            let (client, id, payload, log) =
                (client.clone(), item.id.clone(), *payload, log.clone());
            let driver = Arc::clone(driver);
            raises.spawn(async move {
                log.append(&format!("raising|{round}|{id}|{index}"));
                let raised = client.raise_event(&id, event_name(index), payload).await;
                driver.line(&format!("raise e{index} to {id}: {raised:?}"));
                raised.unwrap_or_else(|error| {
                    panic!("round {round}: cannot raise e{index} to {id}: {error}")
                });
                log.append(&format!("acked|{round}|{id}|{index}"));
            });
        }
    }
    while let Some(raised) = raises.join_next().await {
        raised.expect("an event");
    }
}

/// What is left to run, described, including the `messages` rows: empty once drained.
fn pg_leftovers(
    store: &dyn Store,
    tokio: &tokio::runtime::Runtime,
    sql: &tokio_postgres::Client,
) -> Vec<String> {
    let mut left = leftovers(store);
    let tables = tokio
        .block_on(read_tables(sql))
        .expect("read the messages table");
    left.extend(
        tables
            .messages
            .into_iter()
            .map(|row| format!("messages row: {row}")),
    );
    left
}

/// On a failure, writes what the schema holds to `schema-dump.txt` in the campaign's
/// directory (the database goes with the test's cluster). Never panics itself: it runs
/// while a panic unwinds.
struct DumpOnPanic {
    url: String,
    dir: PathBuf,
}

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let path = self.dir.join("schema-dump.txt");
        let dump = dump_schema(&self.url).unwrap_or_else(|error| format!("no dump: {error}"));
        let _ = std::fs::write(&path, dump);
        // Every table as it is, to load into a server of one's own.
        let sql = self.dir.join("database.sql");
        let dumped = std::process::Command::new("pg_dump")
            .arg("-d")
            .arg(&self.url)
            .arg("-f")
            .arg(&sql)
            .status()
            .is_ok_and(|status| status.success());
        eprintln!(
            "the schema's contents are in {}{}",
            path.display(),
            if dumped {
                format!(", the database in {}", sql.display())
            } else {
                String::new()
            }
        );
    }
}

fn dump_schema(url: &str) -> Result<String, String> {
    use std::fmt::Write as _;
    let engine =
        durable::store::PostgresEngine::connect_shared(url, SCHEMA).map_err(|e| e.to_string())?;
    let owners = engine.owners().map_err(|e| e.to_string())?;
    let all: Vec<u16> = (0..durable::store::PARTITIONS).collect();
    let messages = engine
        .poll_messages(&all, &mut durable::store::Horizon::default(), 1_000)
        .map_err(|e| e.to_string())?;
    let place = PathBuf::from(format!("postgres schema {SCHEMA}"));
    let store = durable::store::KvStore::with_engine(engine, &place).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let audit = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(async {
            let (sql, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            read_tables(&sql).await
        });
    match audit {
        Ok(tables) => {
            let _ = writeln!(
                out,
                "messages sent: {}; sent more than once: {:#?}; replies left: {}",
                tables.sent, tables.sent_again, tables.replies
            );
        }
        Err(error) => {
            let _ = writeln!(out, "no audit of the messages: {error}");
        }
    }
    let _ = writeln!(out, "partition owners (unexpired leases): {owners:?}");
    let _ = writeln!(out, "messages rows: {}", messages.len());
    for row in &messages {
        let _ = writeln!(
            out,
            "  partition {} seq {} for {}",
            row.partition, row.seq, row.target
        );
    }
    let inbox = store.scan_inbox(None, 100).map_err(|e| e.to_string())?;
    let _ = writeln!(out, "inbox (first 100): {inbox:#?}");
    let activities = store
        .scan_activities(None, 100)
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "activities (first 100): {activities:#?}");
    let timers = store.scan_timers(None, 100).map_err(|e| e.to_string())?;
    let _ = writeln!(out, "timers (first 100): {timers:#?}");
    let entities = store
        .list_entities(None, None, 1_000)
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "entities: {entities:#?}");
    let mut after: Option<InstanceId> = None;
    loop {
        let page = store
            .list_instances(&InstanceQuery::default(), after.as_ref(), 1_000)
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.id.clone());
        for record in &page {
            let _ = writeln!(
                out,
                "instance {} ({:?}, partition {}), execution {}, output {:?}, failure {:?}",
                record.id,
                record.status,
                durable::store::partition_of(record.id.as_str()),
                record.execution,
                record.output,
                record.failure
            );
            if !record.status.is_terminal() {
                let history = store
                    .history(&record.id, record.execution)
                    .map_err(|e| e.to_string())?;
                let _ = writeln!(out, "  history: {history:#?}");
            }
        }
    }
    Ok(out)
}

fn postgres_campaign(options: &Options) {
    let began = Instant::now();
    let server = match Server::start() {
        Ok(server) => server,
        Err(why) if std::env::var_os("DURABLE_REQUIRE_POSTGRES").is_some() => {
            panic!("{POSTGRES_TEST}: PostgreSQL is required here but unavailable: {why}")
        }
        Err(why) => {
            println!("{POSTGRES_TEST}: skipped, PostgreSQL is unavailable: {why}");
            return;
        }
    };
    let url = server.database("crash_loop").expect("a database");
    let kills = options.kills.unwrap_or(PG_CI_KILLS);
    let (workers, every) = (options.workers, options.kill_every_ms);
    println!(
        "crash loop on PostgreSQL: seed {seed}, {kills} kills of {workers} workers every \
         {low}..{high} ms (to rerun: cargo test{release} --test crash_loop -- {POSTGRES_TEST} \
         --seed {seed} --kills {kills} --workers {workers} --kill-every {low}..{high}{ttl})",
        seed = options.seed,
        low = every.0,
        high = every.1,
        release = release_flag(),
        ttl = options
            .lease_ttl_ms
            .map_or(String::new(), |ttl| format!(" --lease-ttl {ttl}")),
    );
    let plan = Plan::new(options.seed, kills);
    let reference = reference_run(&plan);
    let reference_time = began.elapsed();
    let workdir = WorkDir::new(options, POSTGRES_TEST);
    let files = Files::new(&workdir.path);
    let _dump = DumpOnPanic {
        url: url.clone(),
        dir: workdir.path.clone(),
    };
    let driver = Arc::new(FileLog::new(workdir.path.join("driver.log")));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let sql = tokio.block_on(async {
        let (sql, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(connection);
        sql
    });
    // The schema and its tables, before any worker: the audit sees every message.
    let probe = open_schema(&url);
    tokio
        .block_on(sql.batch_execute(&audit_sql()))
        .expect("install the messages audit");
    let loop_began = Instant::now();
    let mut pool: Vec<Worker> = (0..workers)
        .map(|slot| {
            let worker = Worker::start(slot, 0, &workdir.path, &url, options);
            driver.line(&format!("w{slot}.0 runs, pid {}", worker.pid()));
            worker
        })
        .collect();
    let (watch, watcher) = FailoverWatch::spawn(&url);
    let client = tokio
        .block_on(Client::connect_postgres_schema(&url, SCHEMA))
        .expect("a client of the database");
    let mut rng = Prng::new(options.seed);
    for round in 0..kills {
        // The batch goes out shortly before the kill (5–400 ms, as the fjall child's
        // kills come after its start), so that kills land on work in progress.
        let delay = rng.range(every.0, every.1);
        let lead = rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1).min(delay);
        let victim = rng.range(0, u64::from(workers) - 1) as usize;
        std::thread::sleep(Duration::from_millis(delay - lead));
        driver.line(&format!("round {round} released"));
        tokio.block_on(release_round(&client, &plan, round, &files.events, &driver));
        std::thread::sleep(Duration::from_millis(lead));
        let worker = &mut pool[victim];
        let (pid, slot, incarnation) = (worker.pid(), worker.slot, worker.incarnation);
        worker.kill();
        driver.line(&format!("w{slot}.{incarnation} killed, pid {pid}"));
        watch
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .killed(pid, Instant::now());
        pool[victim] = Worker::start(slot, incarnation + 1, &workdir.path, &url, options);
        driver.line(&format!(
            "w{slot}.{} runs, pid {}",
            incarnation + 1,
            pool[victim].pid()
        ));
        if (round + 1) % PROGRESS_EVERY == 0 {
            println!(
                "crash loop on PostgreSQL: {} of {kills} kills, {:.0} s",
                round + 1,
                loop_began.elapsed().as_secs_f64()
            );
        }
    }
    driver.line(&format!("round {kills} released (the last)"));
    tokio.block_on(release_round(&client, &plan, kills, &files.events, &driver));
    let deadline = Instant::now() + FINISH_TIMEOUT;
    let ended = tokio.block_on(async {
        for item in &plan.items {
            let left = deadline.saturating_duration_since(Instant::now());
            client
                .wait_for_completion(&item.id, left)
                .await
                .map_err(|error| format!("{} did not end: {error}", item.id))?;
        }
        Ok::<(), String>(())
    });
    if let Err(why) = ended {
        let stuck: Vec<String> = all_instances(&probe)
            .into_iter()
            .filter(|record| !record.status.is_terminal())
            .map(|record| format!("{} ({:?})", record.id, record.status))
            .collect();
        panic!(
            "the workload did not finish within {FINISH_TIMEOUT:?} of the last kill: {why}; \
             unfinished: {stuck:#?}; left to run: {:#?}",
            pg_leftovers(&probe, &tokio, &sql)
        );
    }
    // Signals an orchestration's last turn sent, lock releases: let them land.
    let drain_deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let left = pg_leftovers(&probe, &tokio, &sql);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < drain_deadline,
            "work left {STOP_TIMEOUT:?} after every instance ended (stuck): {left:#?}"
        );
        std::thread::sleep(OWNERS_POLL);
    }
    let loop_time = loop_began.elapsed();
    for worker in pool {
        worker.stop();
    }
    watch.1.store(true, Ordering::Release);
    watcher.join().expect("the failover watcher");
    let tables = tokio.block_on(read_tables(&sql)).expect("read the tables");
    let crash = snapshot(&probe);
    let s = verify_postgres(&plan, &crash, &reference, &files, &tables);
    check_probe(&tokio, probe, &crash);
    let watch = watch.0.lock().unwrap_or_else(PoisonError::into_inner);
    let mut failovers: Vec<Duration> = watch.done.iter().map(|(_, took)| *took).collect();
    failovers.sort();
    let held: usize = watch.done.iter().map(|(partitions, _)| partitions).sum();
    let median = failovers
        .get(failovers.len() / 2)
        .copied()
        .unwrap_or_default();
    let slowest = failovers.last().copied().unwrap_or_default();
    println!(
        "crash loop on PostgreSQL: {kills} kills of {workers} workers, {kills} restarts; \
         {instances} instances ({items} started by the driver, {subs} sub-orchestrations, \
         {crossing} in another partition than their parent; {partitions} partitions used), \
         all completed as in the crash-free run; activities: {runs} runs of {tasks} tasks, \
         {committed} committed, {reruns} re-runs ({rerun_tasks} tasks ran more than once, \
         {elsewhere} of them in another process; none after its commit); {events} events \
         raised, each consumed once; {fired} timers fired ({cancelled} cancelled), none \
         twice; {sent} messages through the table, {again} of them sent more than once, \
         none left, nor any reply; failover: {failed_over} kills of a worker holding \
         partitions ({held} partitions in all), all back in live hands after {median:.2?} \
         (median), {slowest:.2?} at most; {empty} kills of a worker holding none yet; \
         {acquisitions} partition acquisitions; seed {seed}; {total:.1} s (crash-free \
         reference {reference:.1} s, workers {looped:.1} s)",
        instances = s.summary.instances,
        items = plan.items.len(),
        subs = s.subs,
        crossing = s.subs_crossing,
        partitions = s.partitions,
        runs = s.summary.runs,
        tasks = s.summary.tasks_run,
        committed = s.summary.committed,
        reruns = s.summary.reruns,
        rerun_tasks = s.summary.rerun_tasks,
        elsewhere = s.rerun_elsewhere,
        events = s.summary.events_raised,
        fired = s.summary.timers_fired,
        cancelled = s.summary.timers_cancelled,
        failed_over = watch.done.len(),
        empty = watch.empty_handed,
        acquisitions = tables.acquisitions,
        sent = tables.sent,
        again = tables.sent_again.len(),
        seed = options.seed,
        total = began.elapsed().as_secs_f64(),
        reference = reference_time.as_secs_f64(),
        looped = loop_time.as_secs_f64(),
    );
    if !tables.sent_again.is_empty() {
        println!(
            "crash loop on PostgreSQL: messages sent more than once: {:#?}",
            tables.sent_again
        );
    }
    assert!(
        watch.pending.is_empty(),
        "partitions of killed workers never found a live owner again: {:?}",
        watch
            .pending
            .iter()
            .map(|kill| (kill.pid, &kill.held))
            .collect::<Vec<_>>()
    );
}

/// The PostgreSQL campaign's counts, beyond the common ones.
struct PgSummary {
    summary: Summary,
    subs: usize,
    subs_crossing: usize,
    partitions: usize,
    rerun_elsewhere: usize,
}

fn verify_postgres(
    plan: &Plan,
    crash: &Snapshot,
    reference: &Snapshot,
    files: &Files,
    tables: &Tables,
) -> PgSummary {
    assert!(
        reference.leftovers.is_empty(),
        "the crash-free run left work behind: {:?}",
        reference.leftovers
    );
    // Every check runs, and a failure names all that failed: over a shared schema one
    // fault tends to show in several ways, and which ones tells where it is.
    let mut failed: Vec<String> = Vec::new();
    attempt(&mut failed, "nothing left", || {
        assert!(
            crash.leftovers.is_empty() && tables.messages.is_empty(),
            "work left after the last batch ended (stuck): {:?}, messages rows {:?}",
            crash.leftovers,
            tables.messages
        );
    });
    attempt(&mut failed, "each command answered once", || {
        assert_eq!(
            tables.replies, 0,
            "answers to commands that nobody took: a command was answered twice"
        );
    });
    let mut summary = Summary {
        instances: crash.instances.len(),
        ..Summary::default()
    };
    let mut rerun_elsewhere = 0;
    attempt(&mut failed, "no committed step re-ran", || {
        rerun_elsewhere = check_worker_runs(crash, files, &mut summary);
    });
    attempt(&mut failed, "outcomes", || {
        check_outcomes(plan, crash, reference);
    });
    attempt(&mut failed, "entities", || {
        check_entities(plan, crash, reference);
    });
    check_histories(plan, reference, &mut Summary::default());
    attempt(&mut failed, "histories", || {
        check_histories(plan, crash, &mut summary);
    });
    attempt(&mut failed, "retries", || check_retry_keys(files));
    attempt(&mut failed, "events", || {
        check_events(files, &mut summary);
        assert_eq!(
            summary.events_raised_again, 0,
            "the driver raised an event twice"
        );
    });
    assert!(
        failed.is_empty(),
        "{} of the checks failed (each one's panic is above):\n{}",
        failed.len(),
        failed.join("\n")
    );
    // The work crosses partitions: sub-orchestrations, and the instances spread.
    let partition = |id: &str| durable::store::partition_of(id);
    let subs: Vec<&InstanceRecord> = crash
        .instances
        .iter()
        .filter(|record| record.parent.is_some())
        .collect();
    let subs_crossing = subs
        .iter()
        .filter(|record| {
            record.parent.as_ref().is_some_and(|parent| {
                partition(parent.instance.as_str()) != partition(record.id.as_str())
            })
        })
        .count();
    assert!(
        subs_crossing * 2 > subs.len(),
        "most sub-orchestrations should land in another partition than their parent's: \
         {subs_crossing} of {}",
        subs.len()
    );
    let partitions: BTreeSet<u16> = crash
        .instances
        .iter()
        .map(|record| partition(record.id.as_str()))
        .collect();
    PgSummary {
        summary,
        subs: subs.len(),
        subs_crossing,
        partitions: partitions.len(),
        rerun_elsewhere,
    }
}

/// Runs one check; a failure joins `failed` (its panic message, shortened) instead of
/// ending the verification.
fn attempt(failed: &mut Vec<String>, what: &str, check: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let short: String = message.chars().take(300).collect();
        failed.push(format!("- {what}: {short}"));
    }
}

/// The check of the runs is only as good as the workers' probe: it must see a committed
/// completion. Now that every completion is, it reads a sample of them (up to 300, spread
/// over the campaign) as a worker's run does.
fn check_probe(tokio: &tokio::runtime::Runtime, probe: PostgresStore, crash: &Snapshot) {
    let (_, completed) = final_tasks(crash);
    let completed: Vec<&String> = completed.iter().collect();
    let stride = completed.len().div_ceil(300).max(1);
    let probe = Arc::new(probe);
    for key in completed.into_iter().step_by(stride) {
        let (task, execution, instance) = {
            let mut parts = key.rsplitn(3, ':');
            let (Some(task), Some(execution), Some(instance)) =
                (parts.next(), parts.next(), parts.next())
            else {
                panic!("malformed task key {key}");
            };
            (task, execution, instance)
        };
        let key_read = ActivityKey {
            instance: InstanceId::new(instance).expect("an instance id"),
            execution: ExecutionId(execution.parse().expect("an execution id")),
            task: TaskId(task.parse().expect("a task id")),
        };
        let found = tokio.block_on(completion_state(&probe, key_read));
        assert_eq!(
            found, "committed",
            "the workers' probe does not see the committed completion of {key}"
        );
    }
}

/// One activity run, as a worker wrote it down.
struct WorkerRun {
    who: String,
    found: String,
}

/// The activity runs against the store: each task ran at least once, only after it was
/// scheduled in a committed history, and every run began while the task's completion was
/// not committed (each run read that from the store before its side effect; see the
/// header). Returns how many tasks ran in more than one process.
fn check_worker_runs(crash: &Snapshot, files: &Files, summary: &mut Summary) -> usize {
    let mut runs: BTreeMap<String, Vec<WorkerRun>> = BTreeMap::new();
    for line in files.runs.lines() {
        let parts: Vec<&str> = line.splitn(6, '|').collect();
        let [who, _name, key, _idempotency, found, _at] = parts[..] else {
            panic!("malformed run line {line:?}");
        };
        runs.entry(key.to_owned()).or_default().push(WorkerRun {
            who: who.to_owned(),
            found: found.to_owned(),
        });
    }
    let (scheduled, completed) = final_tasks(crash);
    for key in &scheduled {
        assert!(runs.contains_key(key), "activity {key} never ran");
    }
    for (key, task_runs) in &runs {
        assert!(
            scheduled.contains(key),
            "activity {key} ran without being scheduled in a committed history"
        );
        for run in task_runs {
            assert_eq!(
                run.found,
                "open",
                "activity {key} ran in worker {} although its completion was committed when \
                 that run began (what the run found: {}; every run of the task: {:?})",
                run.who,
                run.found,
                task_runs
                    .iter()
                    .map(|run| format!("{} {}", run.who, run.found))
                    .collect::<Vec<_>>()
            );
        }
    }
    summary.runs = runs.values().map(Vec::len).sum();
    summary.tasks_run = runs.len();
    summary.committed = completed.len();
    summary.reruns = summary.runs - summary.tasks_run;
    summary.rerun_tasks = runs.values().filter(|runs| runs.len() > 1).count();
    // `w1.3` and `w1.4` are two processes of one worker slot: the same process is the
    // whole name.
    runs.values()
        .filter(|runs| {
            let processes: BTreeSet<&str> = runs.iter().map(|run| run.who.as_str()).collect();
            processes.len() > 1
        })
        .count()
}

fn release_flag() -> &'static str {
    if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    }
}

// ---------------------------------------------------------------------------------------
// The command line.

const USAGE: &str = "usage: crash_loop [--kills N] [--seed S] [--dir DIR] [--workers N] \
                     [--kill-every MIN_MS..MAX_MS] [--lease-ttl MS] [FILTER] [libtest options, ignored]
  tests: crash_loop (fjall), crash_loop_postgres (worker processes sharing a PostgreSQL schema)
  --kills N       kills (default: 20 with fjall, 12 with PostgreSQL)
  --seed S        the workload's inputs and the kill schedule (default: a fresh one, printed)
  --dir DIR       keep the logs in DIR/<test>, which must be empty or absent
  --workers N     PostgreSQL worker processes (default 3)
  --kill-every A..B  PostgreSQL: milliseconds between kills, drawn uniformly (default 1000..5000)
  --lease-ttl MS  PostgreSQL: the workers' lease time to live (default: the runtime's, 1.5 s)";

/// The tests, in the order they run.
const TESTS: [&str; 2] = [FJALL_TEST, POSTGRES_TEST];

enum Command {
    Help,
    /// `--list`: print the tests selected (none when filtered out or only ignored tests
    /// are asked for).
    List(Vec<&'static str>),
    /// Filtered out, or only ignored tests asked for.
    Skip,
    Run(Options, Vec<&'static str>),
}

/// libtest's options, accepted and ignored: those that take a value, and flags.
const IGNORED_WITH_VALUE: &[&str] = &[
    "--test-threads",
    "--format",
    "--color",
    "--logfile",
    "--shuffle-seed",
    "-Z",
];
const IGNORED_FLAGS: &[&str] = &[
    "--include-ignored",
    "--nocapture",
    "--no-capture",
    "--show-output",
    "--quiet",
    "-q",
    "--test",
    "--bench",
    "--report-time",
    "--ensure-time",
    "--shuffle",
    "--force-run-in-process",
    "--exclude-should-panic",
];

fn parse_args(args: &[String]) -> Result<Command, String> {
    let mut options = Options {
        kills: None,
        seed: default_seed(),
        dir: None,
        workers: PG_CI_WORKERS,
        kill_every_ms: KILL_EVERY_MS,
        lease_ttl_ms: None,
    };
    let (mut list, mut ignored, mut exact) = (false, false, false);
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut index = 0;
    while index < args.len() {
        let arg = &args[index];
        index += 1;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(value) = &inline {
                return Ok(value.clone());
            }
            index += 1;
            args.get(index - 1)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--kills" => options.kills = Some(parse_number(flag, &value()?)?),
            "--workers" => {
                options.workers = parse_number(flag, &value()?)?;
                if options.workers == 0 {
                    return Err("--workers must be at least 1".into());
                }
            }
            "--kill-every" => options.kill_every_ms = parse_range(flag, &value()?)?,
            "--lease-ttl" => options.lease_ttl_ms = Some(parse_number(flag, &value()?)?),
            "--seed" => options.seed = parse_number(flag, &value()?)?,
            "--dir" => options.dir = Some(PathBuf::from(value()?)),
            "--skip" => skips.push(value()?),
            "--list" => list = true,
            "--ignored" => ignored = true,
            "--exact" => exact = true,
            "-h" | "--help" => return Ok(Command::Help),
            _ if IGNORED_WITH_VALUE.contains(&flag) => drop(value()?),
            _ if IGNORED_FLAGS.contains(&flag) => {}
            _ if flag.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ => filters.push(arg.clone()),
        }
    }
    let selected: Vec<&'static str> = TESTS
        .into_iter()
        .filter(|test| {
            let matches = |pattern: &String| match exact {
                true => pattern == test,
                false => test.contains(pattern.as_str()),
            };
            !ignored
                && (filters.is_empty() || filters.iter().any(matches))
                && !skips.iter().any(matches)
        })
        .collect();
    Ok(match (list, selected.is_empty()) {
        (true, _) => Command::List(selected),
        (false, false) => Command::Run(options, selected),
        (false, true) => Command::Skip,
    })
}

/// `MIN..MAX`, as numbers with `MIN <= MAX`.
fn parse_range(flag: &str, text: &str) -> Result<(u64, u64), String> {
    let (low, high) = text
        .split_once("..")
        .ok_or_else(|| format!("{flag} {text:?}: expected MIN..MAX"))?;
    let range = (parse_number(flag, low)?, parse_number(flag, high)?);
    if range.0 > range.1 {
        return Err(format!("{flag} {text:?}: MIN is above MAX"));
    }
    Ok(range)
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error| format!("{flag} {text:?}: {error}"))
}

/// A fresh seed for each run that was not given one (printed, so it can be).
fn default_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    Prng::new(nanos ^ u64::from(std::process::id())).next_u64() % 1_000_000
}

fn main() -> ExitCode {
    if let Ok(config) = std::env::var(CHILD_VAR) {
        return child(&config);
    }
    if let Ok(config) = std::env::var(WORKER_VAR) {
        return worker(&config);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            ExitCode::from(2)
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::List(tests)) => {
            for test in tests {
                println!("{test}: test");
            }
            ExitCode::SUCCESS
        }
        Ok(Command::Skip) => {
            println!("running 0 tests ({} filtered out)", TESTS.join(", "));
            ExitCode::SUCCESS
        }
        Ok(Command::Run(options, tests)) => {
            for test in tests {
                match test {
                    FJALL_TEST => campaign(&options),
                    _ => postgres_campaign(&options),
                }
            }
            ExitCode::SUCCESS
        }
    }
}
