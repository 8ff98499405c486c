use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    std::thread::sleep(std::time::Duration::from_secs(1));
    Ok(())
}

fn main() {}
