//! Pattern 2, fan-out/fan-in: F1 returns a batch of work, F2 runs once per item in
//! parallel, F3 receives the sum. Here: count the words of a batch of documents.
//!
//! The fan-out is durable too: results that arrived before a crash are not computed
//! again; only the missing ones run after a restart.
//!
//! Run: `cargo run --example fan_out_fan_in` (state goes to
//! `./durable-data/fan_out_fan_in`, or `$DURABLE_DATA`).

use durable::prelude::*;
use std::time::{Duration, Instant};

/// F1: the batch of work items.
#[activity]
async fn list_documents(_ctx: ActivityContext, count: usize) -> Result<Vec<String>, Error> {
    Ok((0..count)
        .map(|i| {
            let words = [
                "durable",
                "functions",
                "for",
                "rust",
                "checkpoint",
                "replay",
            ];
            (0..=i % 50)
                .map(|j| words[(i + j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect())
}

/// F2: the work for one item.
#[activity]
async fn count_words(_ctx: ActivityContext, document: String) -> Result<u64, Error> {
    Ok(document.split_whitespace().count() as u64)
}

/// F3: the fan-in.
#[activity]
async fn record_total(_ctx: ActivityContext, total: u64) -> Result<String, Error> {
    Ok(format!("{total} words in all"))
}

#[orchestrator]
async fn word_count(ctx: OrchestrationContext, documents: usize) -> Result<String, Error> {
    let batch = ctx.call_activity(list_documents, documents).await?;
    let counts: Vec<_> = batch
        .into_iter()
        .map(|document| ctx.call_activity(count_words, document))
        .collect();
    let counts = ctx.join_all(counts).await?;
    ctx.call_activity(record_total, counts.iter().sum()).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Each example keeps its state in a directory of its own, so that two can run at
    // once: `./durable-data/fan_out_fan_in`, or the directory `$DURABLE_DATA` names.
    let data =
        std::env::var("DURABLE_DATA").unwrap_or_else(|_| "durable-data/fan_out_fan_in".to_owned());
    let runtime = Runtime::builder()
        .store_from_env(&data)
        .register(word_count)
        .register(list_documents)
        .register(count_words)
        .register(record_total)
        .start()
        .await?;
    let client = runtime.client();

    let documents = 1_000;
    let started = Instant::now();
    let instance = client.start(word_count, documents).await?;
    let result = instance.wait(Duration::from_secs(60)).await?;
    println!(
        "result: {result} ({documents} documents counted in parallel in {:.0?})",
        started.elapsed()
    );
    let metrics = runtime.metrics();
    println!(
        "{} activities, {} orchestrator turns, {} commits",
        metrics.activities_completed, metrics.turns, metrics.commits
    );
    // On fjall (on PostgreSQL, `DURABLE_POSTGRES`, there is no directory).
    if let Ok(data) = std::fs::canonicalize(&data) {
        println!(
            "state is stored in {} (fjall, fsync on every commit)",
            data.display()
        );
    }
    runtime.shutdown().await;
    Ok(())
}
