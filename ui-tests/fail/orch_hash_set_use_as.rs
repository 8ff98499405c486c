use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use std::collections::HashSet as Set;
    let _seen: Set<u64> = Set::new();
    Ok(())
}

fn main() {}
