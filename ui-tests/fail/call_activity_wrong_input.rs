use durable::prelude::*;

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let _ = x;
    ctx.call_activity(add_one, "x").await
}

fn main() {}
