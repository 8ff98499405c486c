use durable::prelude::*;
use std::time::SystemTime;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _t = SystemTime::now();
    Ok(())
}

fn main() {}
