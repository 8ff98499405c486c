use durable::prelude::*;

#[orchestrator]
fn chain(_ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    Ok(x)
}

fn main() {}
