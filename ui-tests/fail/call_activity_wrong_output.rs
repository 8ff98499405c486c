use durable::prelude::*;

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<String, Error> {
    let text: String = ctx.call_activity(add_one, x).await?;
    Ok(text)
}

fn main() {}
