use durable::prelude::*;

#[orchestrator]
async fn tally(_ctx: OrchestrationContext, totals: &mut Vec<u64>) -> Result<(), Error> {
    totals.push(1);
    Ok(())
}

fn main() {}
