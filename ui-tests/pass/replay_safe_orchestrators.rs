//! Orchestrator code that must stay allowed by the body check.
use durable::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[activity]
async fn fetch(_ctx: ActivityContext, key: String) -> Result<u64, Error> {
    Ok(key.len() as u64)
}

/// A helper on pure data.
fn score(values: &[u64]) -> u64 {
    values.iter().copied().max().unwrap_or_default()
}

#[orchestrator]
async fn replay_safe(ctx: OrchestrationContext, keys: Vec<String>) -> Result<u64, Error> {
    // The replay-safe clock and ids.
    let now = ctx.current_utc_datetime();
    let deadline = now + Duration::from_secs(3600);
    let _id = ctx.new_guid();
    if ctx.is_replaying() {
        // Logging only on the first run is fine.
    }

    // Ordered collections, loops, match, local closures.
    let mut totals = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let tasks: Vec<_> = keys.iter().map(|key| ctx.call_activity(fetch, key.clone())).collect();
    for (key, value) in keys.iter().zip(ctx.join_all(tasks).await?) {
        totals.insert(key.clone(), value);
        seen.insert(value);
    }
    let double = |x: u64| x * 2;
    let best = match score(&totals.values().copied().collect::<Vec<_>>()) {
        0 => 0,
        n => double(n),
    };

    // Names that merely look like rejected ones.
    let sleep = |d: Duration| d.as_secs();
    let spawn = 3;
    let random = best + spawn + sleep(Duration::from_secs(1));
    let mut deadlines = vec![deadline];
    deadlines.sort();

    // Durable timers.
    ctx.sleep(Duration::from_millis(1)).await?;
    ctx.create_timer(deadline).await?;

    // A reviewed exception, marked and explained.
    #[durable::allow_nondeterministic("only measures how long this turn took, for a log line")]
    let started = std::time::Instant::now();
    let _ = started;

    Ok(random + seen.len() as u64)
}

fn main() {}
