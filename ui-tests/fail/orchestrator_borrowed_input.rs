use durable::prelude::*;

#[orchestrator]
async fn greet(_ctx: OrchestrationContext, name: &str) -> Result<String, Error> {
    Ok(format!("hello {name}"))
}

fn main() {}
