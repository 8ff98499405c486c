use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use tokio::fs;
    let _ = fs::read("data.bin").await;
    Ok(())
}

fn main() {}
