use durable::prelude::*;
mod chrono {
    pub struct Local;
    impl Local {
        pub fn now() {}
    }
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let stamp = || chrono::Local::now();
    stamp();
    Ok(())
}

fn main() {}
