use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use tokio::task::spawn_blocking;
    let _ = spawn_blocking(|| 1);
    Ok(())
}

fn main() {}
