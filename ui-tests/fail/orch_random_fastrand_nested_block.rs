use durable::prelude::*;
mod fastrand {
    pub fn u64(_: std::ops::RangeFull) -> u64 {
        4
    }
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    if true {
        {
            let _n = fastrand::u64(..);
        }
    }
    Ok(())
}

fn main() {}
