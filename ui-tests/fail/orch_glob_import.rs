use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use std::thread::*;
    sleep(std::time::Duration::from_millis(1));
    Ok(())
}

fn main() {}
