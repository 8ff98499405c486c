use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    tokio::runtime::Handle::current().block_on(async {});
    Ok(())
}

fn main() {}
