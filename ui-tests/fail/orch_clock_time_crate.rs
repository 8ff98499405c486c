use durable::prelude::*;
mod time {
    pub struct OffsetDateTime;
    impl OffsetDateTime {
        pub fn now_utc() {}
    }
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    time::OffsetDateTime::now_utc();
    Ok(())
}

fn main() {}
