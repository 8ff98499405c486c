use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let work = async { 1 };
    {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), work).await;
    }
    Ok(())
}

fn main() {}
