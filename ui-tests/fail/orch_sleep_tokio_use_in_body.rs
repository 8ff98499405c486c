use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use tokio::time::sleep;
    sleep(std::time::Duration::from_secs(1)).await;
    Ok(())
}

fn main() {}
