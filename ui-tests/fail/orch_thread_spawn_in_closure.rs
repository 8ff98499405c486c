use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let start = || std::thread::spawn(|| 1);
    start();
    Ok(())
}

fn main() {}
