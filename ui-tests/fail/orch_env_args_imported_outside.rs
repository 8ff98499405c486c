use durable::prelude::*;
use std::env;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _args: Vec<String> = env::args().collect();
    Ok(())
}

fn main() {}
