use durable::prelude::*;

#[orchestrator]
async fn chain(_ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    Ok(x)
}

async fn start(client: Client) {
    let _ = client.start(chain, "x").await;
}

fn main() {}
