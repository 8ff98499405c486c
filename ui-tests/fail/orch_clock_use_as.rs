use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use std::time::SystemTime as Wall;
    let _t = Wall::now();
    Ok(())
}

fn main() {}
