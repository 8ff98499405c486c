use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let later = async { std::env::var("TOKEN") };
    let _ = later.await;
    Ok(())
}

fn main() {}
