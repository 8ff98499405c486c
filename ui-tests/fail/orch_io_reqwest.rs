use durable::prelude::*;
mod reqwest {
    pub async fn get(_: &str) {}
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    reqwest::get("https://example.com").await;
    Ok(())
}

fn main() {}
