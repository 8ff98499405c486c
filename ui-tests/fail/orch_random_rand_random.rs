use durable::prelude::*;
mod rand {
    pub fn random() -> u64 {
        4
    }
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _n = rand::random();
    Ok(())
}

fn main() {}
