use durable::prelude::*;
mod futures {
    pub mod executor {
        pub fn block_on<F: std::future::Future>(_: F) {}
    }
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    futures::executor::block_on(async {});
    Ok(())
}

fn main() {}
