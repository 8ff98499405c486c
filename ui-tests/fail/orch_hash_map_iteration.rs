use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let mut totals = std::collections::HashMap::new();
    totals.insert("a", 1);
    for (_k, _v) in &totals {}
    Ok(())
}

fn main() {}
