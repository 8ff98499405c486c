use durable::prelude::*;
mod chrono {
    pub struct Utc;
    impl Utc {
        pub fn now() {}
    }
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    chrono::Utc::now();
    Ok(())
}

fn main() {}
