use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let (_a, _b) = tokio::join!(async { 1 }, async { 2 });
    Ok(())
}

fn main() {}
