use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    match 1 {
        1 => {
            tokio::spawn(async {});
        }
        _ => {}
    }
    Ok(())
}

fn main() {}
