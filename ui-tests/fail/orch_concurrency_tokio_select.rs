use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let a = async { 1 };
    let b = async { 2 };
    tokio::select! {
        _ = a => {}
        _ = b => {}
    }
    Ok(())
}

fn main() {}
