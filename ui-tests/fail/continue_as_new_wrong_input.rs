use durable::prelude::*;

#[orchestrator]
async fn counter(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
    let _ = n;
    // The next execution's input is the orchestrator's input type.
    ctx.continue_as_new(counter, "one more").await
}

fn main() {}
