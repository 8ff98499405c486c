use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use std::time::Instant;
    let _t = Instant::now();
    Ok(())
}

fn main() {}
