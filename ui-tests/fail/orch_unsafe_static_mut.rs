use durable::prelude::*;
static mut COUNTER: u64 = 0;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _n = unsafe { COUNTER };
    Ok(())
}

fn main() {}
