//! Pattern 5, human interaction: request an approval, then wait for an `ApprovalEvent` or a
//! timeout, whichever comes first, and process or escalate. The timeout is a durable timer:
//! 72 hours in production (the default below), a second in this demo. The approval is
//! raised from the client, as an HTTP handler or a UI would.
//!
//! Run: `cargo run --example human_interaction` (state goes to
//! `./durable-data/human_interaction`, or `$DURABLE_DATA`).

use durable::Either;
use durable::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApprovalRequest {
    order: String,
    /// How long to wait for a person; 72 hours unless the caller says otherwise.
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApprovalEvent {
    approved: bool,
    by: String,
}

#[activity]
async fn request_approval(_ctx: ActivityContext, order: String) -> Result<(), Error> {
    println!("  approval requested for {order} (an email or chat message, in real life)");
    Ok(())
}

#[activity]
async fn process_approval(
    _ctx: ActivityContext,
    (order, event): (String, ApprovalEvent),
) -> Result<String, Error> {
    let verdict = if event.approved {
        "approved"
    } else {
        "rejected"
    };
    Ok(format!("{order} {verdict} by {}", event.by))
}

#[activity]
async fn escalate(_ctx: ActivityContext, order: String) -> Result<String, Error> {
    Ok(format!(
        "{order}: nobody answered in time, escalated to a manager"
    ))
}

#[orchestrator]
async fn approval_workflow(
    ctx: OrchestrationContext,
    request: ApprovalRequest,
) -> Result<String, Error> {
    ctx.call_activity(request_approval, request.order.clone())
        .await?;
    let timeout = Duration::from_millis(request.timeout_ms.unwrap_or(72 * 3600 * 1000));
    let approval = ctx.wait_for_event::<ApprovalEvent>("ApprovalEvent");
    let deadline = ctx.sleep(timeout);
    // Whichever comes first in history wins; the losing timer is cancelled.
    match ctx.select(approval, deadline).await {
        Either::Left(event) => {
            let event = event?;
            ctx.call_activity(process_approval, (request.order, event))
                .await
        }
        Either::Right(timer) => {
            timer?;
            ctx.call_activity(escalate, request.order).await
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Each example keeps its state in a directory of its own, so that two can run at
    // once: `./durable-data/human_interaction`, or the directory `$DURABLE_DATA` names.
    let data = std::env::var("DURABLE_DATA")
        .unwrap_or_else(|_| "durable-data/human_interaction".to_owned());
    let runtime = Runtime::builder()
        .store_from_env(&data)
        .register(approval_workflow)
        .register(request_approval)
        .register(process_approval)
        .register(escalate)
        .start()
        .await?;
    let client = runtime.client();

    let answered = ApprovalRequest {
        order: "order-1001".to_owned(),
        timeout_ms: Some(5_000),
    };
    let ignored = ApprovalRequest {
        order: "order-1002".to_owned(),
        timeout_ms: Some(1_000),
    };
    let first = client.start(approval_workflow, answered).await?;
    let second = client.start(approval_workflow, ignored).await?;

    // A person approves the first order a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = ApprovalEvent {
        approved: true,
        by: "ana@example.com".to_owned(),
    };
    client
        .raise_event(first.id(), "ApprovalEvent", event)
        .await?;
    println!("raised ApprovalEvent for {}", first.id());

    println!("result: {}", first.wait(Duration::from_secs(30)).await?);
    println!("result: {}", second.wait(Duration::from_secs(30)).await?);

    // A late answer to an instance that has ended is discarded, and the caller hears so.
    let late = ApprovalEvent {
        approved: true,
        by: "bo@example.com".to_owned(),
    };
    if let Err(error) = client.raise_event(second.id(), "ApprovalEvent", late).await {
        println!("late approval: {error}");
    }
    // On fjall (on PostgreSQL, `DURABLE_POSTGRES`, there is no directory).
    if let Ok(data) = std::fs::canonicalize(&data) {
        println!("state is stored in {}", data.display());
    }
    runtime.shutdown().await;
    Ok(())
}
