use durable::prelude::*;
mod rand {
    pub fn thread_rng() {}
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    use rand::thread_rng;
    thread_rng();
    Ok(())
}

fn main() {}
