use durable::prelude::*;
use std::process::Command;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _ = Command::new("ls").status();
    Ok(())
}

fn main() {}
