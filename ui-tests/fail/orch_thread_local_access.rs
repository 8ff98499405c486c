use durable::prelude::*;
thread_local! {
    static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    SEEN.with(|seen| seen.set(seen.get() + 1));
    Ok(())
}

fn main() {}
