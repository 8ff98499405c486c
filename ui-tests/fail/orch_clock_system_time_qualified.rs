use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _t = std::time::SystemTime::now();
    Ok(())
}

fn main() {}
