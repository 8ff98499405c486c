use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use tokio::time::interval as every;
    let _ticks = every(std::time::Duration::from_secs(1));
    Ok(())
}

fn main() {}
