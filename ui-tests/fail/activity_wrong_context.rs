use durable::prelude::*;

#[activity]
async fn add_one(_ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

fn main() {}
