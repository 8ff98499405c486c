//! Pattern 4, monitor: poll a job's status on a durable timer until it completes or the
//! monitor expires, then alert. A flexible recurring process: the interval and the expiry
//! come in the input (seconds here, so the demo runs quickly; hours in real life), and each
//! wait is a durable timer, so a restart in the middle loses nothing.
//!
//! Run: `cargo run --example monitor` (state goes to
//! `./durable-data/monitor`, or `$DURABLE_DATA`).

use durable::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MonitorRequest {
    job_id: String,
    polling_interval_ms: u64,
    expiry_ms: u64,
}

/// Fake external jobs: how many polls each takes to complete (`None`: never).
static JOBS: Mutex<BTreeMap<String, (u32, Option<u32>)>> = Mutex::new(BTreeMap::new());

/// Asks the (fake) job service for a job's status.
#[activity]
async fn get_job_status(_ctx: ActivityContext, job_id: String) -> Result<String, Error> {
    let mut jobs = JOBS.lock().map_err(|_| Error::msg("job table poisoned"))?;
    let (polls, done_after) = jobs.entry(job_id).or_insert((0, None));
    *polls += 1;
    Ok(match done_after {
        Some(needed) if *polls >= *needed => "Completed".to_owned(),
        _ => "Running".to_owned(),
    })
}

/// Tells someone.
#[activity]
async fn send_alert(_ctx: ActivityContext, message: String) -> Result<(), Error> {
    println!("  ALERT: {message}");
    Ok(())
}

#[orchestrator]
async fn monitor_job(ctx: OrchestrationContext, request: MonitorRequest) -> Result<String, Error> {
    let expiry = ctx.current_utc_datetime() + Duration::from_millis(request.expiry_ms);
    let mut polls = 0;
    while ctx.current_utc_datetime() < expiry {
        let status = ctx
            .call_activity(get_job_status, request.job_id.clone())
            .await?;
        polls += 1;
        ctx.set_custom_status(serde_json::json!({ "lastStatus": status, "polls": polls }))?;
        if status == "Completed" {
            let message = format!("job {} completed after {polls} polls", request.job_id);
            ctx.call_activity(send_alert, message).await?;
            return Ok(format!("completed after {polls} polls"));
        }
        // Sleep until the next poll on a durable timer.
        let next = ctx.current_utc_datetime() + Duration::from_millis(request.polling_interval_ms);
        ctx.create_timer(next.min(expiry)).await?;
    }
    let message = format!(
        "monitor for job {} expired after {polls} polls",
        request.job_id
    );
    ctx.call_activity(send_alert, message).await?;
    Ok(format!("expired after {polls} polls"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Each example keeps its state in a directory of its own, so that two can run at
    // once: `./durable-data/monitor`, or the directory `$DURABLE_DATA` names.
    let data = std::env::var("DURABLE_DATA").unwrap_or_else(|_| "durable-data/monitor".to_owned());
    let runtime = Runtime::builder()
        .store_from_env(&data)
        .register(monitor_job)
        .register(get_job_status)
        .register(send_alert)
        .start()
        .await?;
    let client = runtime.client();
    {
        let mut jobs = JOBS
            .lock()
            .map_err(|_| anyhow::anyhow!("job table poisoned"))?;
        jobs.insert("job-fast".to_owned(), (0, Some(3)));
        jobs.insert("job-stuck".to_owned(), (0, None));
    }
    let mut monitors = Vec::new();
    for job_id in ["job-fast", "job-stuck"] {
        let request = MonitorRequest {
            job_id: job_id.to_owned(),
            polling_interval_ms: 200,
            expiry_ms: 1_500,
        };
        let instance = client.start(monitor_job, request).await?;
        println!("monitoring {job_id} as instance {}", instance.id());
        monitors.push((job_id, instance));
    }
    for (job_id, instance) in monitors {
        let outcome = instance.wait(Duration::from_secs(30)).await?;
        let status = instance.status().await?;
        let custom: Option<serde_json::Value> = status.custom_status_as()?;
        println!(
            "{job_id}: {outcome} (last custom status: {})",
            custom.unwrap_or_default()
        );
    }
    // On fjall (on PostgreSQL, `DURABLE_POSTGRES`, there is no directory).
    if let Ok(data) = std::fs::canonicalize(&data) {
        println!("state is stored in {}", data.display());
    }
    runtime.shutdown().await;
    Ok(())
}
