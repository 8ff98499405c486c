//! Pattern 6, aggregator (stateful entities): events from many sources are folded into one
//! addressable piece of state, the `Counter` entity of the Durable Functions overview
//! (`add`, `reset`, `get`).
//!
//! The hard part of this pattern with stateless functions is concurrency control: 20 tasks
//! here send 500 events each to the *same* counter, all at once, with no lock and no
//! compare-and-swap in sight. The entity runs its operations one at a time, in arrival
//! order, and each one exactly once, so the total comes out exact. What to look at:
//!
//! - the entity is a plain struct and an `impl` block; `#[entity]` makes each method an
//!   operation and generates typed proxies, so `.add("five")` would not compile;
//! - a client `signal()` returns once the event is stored, and `entity_state` reflects
//!   every signal that returned: the read right after the stream needs no waiting;
//! - an orchestrator signals the counter too (a batch delivered at once, recorded in its
//!   history so a replay does not send it twice), then calls `get`, which runs after the
//!   signals it sent before it.
//!
//! The example checks the numbers and exits non-zero if any is off.
//!
//! Run: `cargo run --example aggregator` (state goes to
//! `./durable-data/aggregator`, or `$DURABLE_DATA`).

use durable::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How many sources send events concurrently, and how many each sends.
const SOURCES: u64 = 20;
const EVENTS_PER_SOURCE: u64 = 500;
/// The one counter every source writes to: the contended case.
const COUNTER: &str = "sensor-readings";

/// The aggregate. Its state is stored as JSON (`{"value":..}`) after each round of
/// operations; `Default` is the state of an entity that was never written.
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.value += amount;
    }

    fn reset(&mut self) {
        self.value = 0;
    }

    /// `&self`: a read-only operation, so the runtime takes no snapshot to undo it.
    fn get(&self) -> i64 {
        self.value
    }
}

/// A batch of readings that arrives in one piece (a file, a message with many records):
/// signalled to the counter from an orchestrator, then read back through it.
#[orchestrator]
async fn ingest_batch(
    ctx: OrchestrationContext,
    (key, readings): (String, Vec<i64>),
) -> Result<i64, Error> {
    for reading in readings {
        // Fire-and-forget: nothing to await. The signal is an action of this turn, so it
        // is committed with the turn and sent exactly once, however often the
        // orchestration is replayed.
        ctx.entity::<Counter>(&key).signal().add(reading);
    }
    // A call goes to the same entity after the signals above, so it sees them.
    ctx.entity::<Counter>(&key).get().await
}

/// Reads the counter from inside an orchestration, as a workflow deciding on the total
/// would.
#[orchestrator]
async fn read_counter(ctx: OrchestrationContext, key: String) -> Result<i64, Error> {
    ctx.entity::<Counter>(&key).get().await
}

/// The reading that source `source` sends as its `event`-th event: 1 to 10, varied so that
/// a lost or doubled event changes the sum.
fn reading(source: u64, event: u64) -> i64 {
    ((source * 31 + event * 17) % 10 + 1) as i64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Each example keeps its state in a directory of its own, so that two can run at
    // once: `./durable-data/aggregator`, or the directory `$DURABLE_DATA` names.
    let data =
        std::env::var("DURABLE_DATA").unwrap_or_else(|_| "durable-data/aggregator".to_owned());
    let runtime = Runtime::builder()
        .store_from_env(&data)
        .register_entity::<Counter>()
        .register(ingest_batch)
        .register(read_counter)
        .start()
        .await?;
    let client = runtime.client();

    // A kept store may hold a total from an earlier run: start the period from zero.
    client.entity::<Counter>(COUNTER).signal().reset().await?;

    // The stream: every source is its own task, signalling as fast as it can.
    let started = Instant::now();
    let mut sources = Vec::new();
    for source in 0..SOURCES {
        let client = client.clone();
        sources.push(tokio::spawn(async move {
            for event in 0..EVENTS_PER_SOURCE {
                client
                    .entity::<Counter>(COUNTER)
                    .signal()
                    .add(reading(source, event))
                    .await?;
            }
            Ok::<_, durable::client::Error>(())
        }));
    }
    for source in sources {
        source.await??;
    }
    let elapsed = started.elapsed();
    let events = SOURCES * EVENTS_PER_SOURCE;
    let expected: i64 = (0..SOURCES)
        .flat_map(|source| (0..EVENTS_PER_SOURCE).map(move |event| reading(source, event)))
        .sum();
    println!(
        "{SOURCES} sources sent {events} signals to Counter/{COUNTER} in {:.2?} ({:.0} signals/s)",
        elapsed,
        events as f64 / elapsed.as_secs_f64()
    );

    // Every signal has returned, so every one has been applied: read the state directly.
    let state = client.entity_state::<Counter>(COUNTER).await?;
    let value = state.map(|counter| counter.value);
    println!("entity_state: {value:?} (expected {expected})");
    anyhow::ensure!(
        value == Some(expected),
        "the counter is {value:?}, not {expected}: events were lost or counted twice"
    );

    // A batch through an orchestrator: its signals, then its `get`, in that order.
    let batch: Vec<i64> = (1..=100).collect();
    let batch_sum: i64 = batch.iter().sum();
    let instance = client
        .start(ingest_batch, (COUNTER.to_owned(), batch))
        .await?;
    let after_batch = instance.wait(Duration::from_secs(30)).await?;
    println!("ingest_batch signalled 100 readings (sum {batch_sum}) and then read {after_batch}");
    anyhow::ensure!(
        after_batch == expected + batch_sum,
        "the orchestrator read {after_batch}, not {}",
        expected + batch_sum
    );

    // The same total, read by another orchestration and by the client.
    let instance = client.start(read_counter, COUNTER.to_owned()).await?;
    let read = instance.wait(Duration::from_secs(30)).await?;
    let state = client.entity_state::<Counter>(COUNTER).await?;
    let value = state.map(|counter| counter.value);
    println!("read_counter: {read}; entity_state: {value:?}");
    anyhow::ensure!(
        read == after_batch && value == Some(after_batch),
        "the reads disagree: read_counter {read}, entity_state {value:?}, expected {after_batch}"
    );

    println!("ok: every event counted exactly once");
    runtime.shutdown().await;
    Ok(())
}
