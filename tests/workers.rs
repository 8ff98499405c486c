//! Workers sharing one PostgreSQL schema, in one test process: the partitions are shared
//! out fairly with one owner each, work crosses partitions (sub-orchestrations, entity
//! signals, events and commands sent to instances another worker runs), a client of the
//! database alone reaches every instance, and a worker that stops hands its partitions
//! over. (Worker *processes*, killed and paused, are in `tests/worker_faults.rs` and
//! `tests/crash_loop.rs`.)

use durable::prelude::*;
use durable::{Client, InstanceQuery};
use durable_testkit::postgres::server_or_skip;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

#[activity]
async fn triple(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x * 3)
}

#[orchestrator]
async fn leaf(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let y = ctx.call_activity(triple, x).await?;
    ctx.entity::<Counter>(format!("c{}", x % 5)).signal().add(1);
    Ok(y + 1)
}

#[orchestrator]
async fn tree(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
    // Children with ids of their own land in partitions all over the schema.
    let children = (0..n).map(|i| {
        let id = format!("{}-leaf-{i}", ctx.instance_id());
        ctx.call_sub_orchestrator_with_id(leaf, id, i)
    });
    Ok(ctx.join_all(children).await?.into_iter().sum())
}

const GO: ExternalEvent<u64> = ExternalEvent::new("go");

#[orchestrator]
async fn gate(ctx: OrchestrationContext, base: u64) -> Result<u64, Error> {
    let extra = ctx.wait_for_event(GO).await?;
    Ok(base + extra)
}

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    count: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.count += amount;
    }
}

async fn worker(url: &str) -> Runtime {
    Runtime::builder()
        .postgres_schema(url, "hub")
        .register(triple)
        .register(leaf)
        .register(tree)
        .register(gate)
        .register_entity::<Counter>()
        .start()
        .await
        .unwrap()
}

/// The partitions' owners, by worker.
async fn owners(url: &str) -> BTreeMap<String, usize> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let engine = durable_store::PostgresEngine::connect_shared(&url, "hub").unwrap();
        let mut by_worker = BTreeMap::new();
        for (_, worker, _) in engine.owners().unwrap() {
            *by_worker.entry(worker).or_default() += 1;
        }
        by_worker
    })
    .await
    .unwrap()
}

fn tree_output(n: u64) -> u64 {
    (0..n).map(|i| i * 3 + 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_partitions_and_every_instance_is_reached_from_anywhere() {
    let Some(server) = server_or_skip("workers_share_the_partitions") else {
        return;
    };
    let url = server.database("workers").unwrap();
    let first = worker(&url).await;
    let second = worker(&url).await;
    let third = worker(&url).await;
    durable_testkit::eventually("three workers with a fair share each", async || {
        let owners = owners(&url).await;
        // A fair share is at most 22 (64 / 3 rounded up); the last one takes what is left.
        owners.len() == 3
            && owners.values().all(|n| *n <= 22)
            && owners.values().sum::<usize>() == 64
    })
    .await;
    assert_eq!(owners(&url).await.values().sum::<usize>(), 64);

    // Trees of sub-orchestrations across partitions, started from each worker's client.
    let clients = [first.client(), second.client(), third.client()];
    let mut trees = Vec::new();
    for t in 0..9u64 {
        let client = &clients[(t % 3) as usize];
        trees.push(
            client
                .start_with_id(tree, format!("tree-{t}"), 10 + t)
                .await
                .unwrap(),
        );
    }
    // A client of the database alone starts, raises and waits.
    let remote = Client::connect_postgres_schema(&url, "hub").await.unwrap();
    for g in 0..6u64 {
        remote
            .start_with_id(gate, format!("gate-{g}"), g)
            .await
            .unwrap();
    }
    match remote.start_with_id(gate, "gate-0", 0).await {
        Err(durable::client::Error::AlreadyExists { .. }) => {}
        other => panic!("a second start of a running id: {other:?}"),
    }
    for g in 0..6u64 {
        remote
            .raise_event(format!("gate-{g}"), GO, 100)
            .await
            .unwrap();
    }
    for (t, handle) in (0..).zip(trees) {
        assert_eq!(handle.wait(WAIT).await.unwrap(), tree_output(10 + t));
    }
    for g in 0..6u64 {
        let status = remote
            .wait_for_completion(format!("gate-{g}"), WAIT)
            .await
            .unwrap();
        assert_eq!(
            status.output,
            Some(durable::Json::encode(&(g + 100)).unwrap())
        );
    }
    // Every leaf signalled its counter once: 9 trees of 10..=18 leaves.
    let leaves: i64 = (10..19).sum();
    durable_testkit::eventually_eq("the counters' sum", leaves, async || {
        let mut sum = 0;
        for c in 0..5 {
            sum += remote
                .entity::<Counter>(format!("c{c}"))
                .state()
                .await
                .unwrap()
                .map_or(0, |counter| counter.count);
        }
        sum
    })
    .await;

    // A graceful stop hands the partitions over at once.
    let stopped = Instant::now();
    second.shutdown().await;
    durable_testkit::eventually("two workers with 32 partitions each", async || {
        let owners = owners(&url).await;
        owners.len() == 2 && owners.values().all(|n| *n == 32)
    })
    .await;
    let hand_over = stopped.elapsed();
    eprintln!("hand-over after a graceful stop: {hand_over:?}");

    // The remaining workers run everything, including what the stopped one ran.
    let mut late = Vec::new();
    for t in 0..6u64 {
        late.push(
            remote
                .start_with_id(tree, format!("late-{t}"), 5)
                .await
                .unwrap(),
        );
    }
    for handle in late {
        assert_eq!(handle.wait(WAIT).await.unwrap(), tree_output(5));
    }
    remote.terminate("tree-0", "tidy").await.ok();
    remote.purge("tree-0").await.unwrap();
    assert!(remote.status("tree-0").await.unwrap().is_none());
    let page = remote
        .list(&InstanceQuery::default(), 1000, None)
        .await
        .unwrap();
    // 8 trees with 10..=18 leaves (tree-0's 10 leaves stay), 6 gates, 6 late trees of 5.
    assert_eq!(page.instances.len(), 8 + leaves as usize + 6 + 6 + 30);
    first.shutdown().await;
    third.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_hubs_in_schemas_of_one_database_are_apart() {
    let Some(server) = server_or_skip("task_hubs_in_schemas") else {
        return;
    };
    let url = server.database("hubs").unwrap();
    let hub = |schema: &'static str| {
        let url = url.clone();
        async move {
            Runtime::builder()
                .postgres_schema(url, schema)
                .register(gate)
                .start()
                .await
                .unwrap()
        }
    };
    let (alpha, beta) = (hub("alpha").await, hub("beta").await);
    // The same id in each hub is two instances.
    alpha.client().start_with_id(gate, "same", 1).await.unwrap();
    beta.client().start_with_id(gate, "same", 2).await.unwrap();
    // A client of the database alone, for one hub, drives that hub's instance only:
    // suspended, an event waits; resumed, it is taken.
    let remote = Client::connect_postgres_schema(&url, "beta").await.unwrap();
    remote.suspend("same", "hold on").await.unwrap();
    remote.raise_event("same", GO, 40).await.unwrap();
    let status = remote.status("same").await.unwrap().unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Suspended);
    remote.resume("same", "go on").await.unwrap();
    let status = remote.wait_for_completion("same", WAIT).await.unwrap();
    assert_eq!(status.output, Some(durable::Json::encode(&42u64).unwrap()));
    let in_alpha = alpha.client().status("same").await.unwrap().unwrap();
    assert_eq!(in_alpha.runtime_status, RuntimeStatus::Running);
    assert_eq!(in_alpha.input.decode::<u64>().unwrap(), 1);
    alpha.client().terminate("same", "done").await.unwrap();
    alpha.shutdown().await;
    beta.shutdown().await;
}
