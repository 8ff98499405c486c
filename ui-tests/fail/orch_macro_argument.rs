use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    println!("{:?}", std::time::SystemTime::now());
    Ok(())
}

fn main() {}
