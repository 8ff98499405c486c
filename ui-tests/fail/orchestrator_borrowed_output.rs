use durable::prelude::*;

#[orchestrator]
async fn greet(_ctx: OrchestrationContext, name: String) -> Result<&'static str, Error> {
    let _ = name;
    Ok("hello")
}

fn main() {}
