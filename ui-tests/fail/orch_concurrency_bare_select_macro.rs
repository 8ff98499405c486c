use durable::prelude::*;
macro_rules! select {
    ($($t:tt)*) => {
        ()
    };
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    select! { a = 1 => a };
    Ok(())
}

fn main() {}
