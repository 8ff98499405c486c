use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _text = std::fs::read_to_string("config.toml");
    Ok(())
}

fn main() {}
