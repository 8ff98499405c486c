use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _t = std::time::Instant::now();
    let _v = std::env::var("X");
    std::thread::sleep(std::time::Duration::from_millis(1));
    Ok(())
}

fn main() {}
