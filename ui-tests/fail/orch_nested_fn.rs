use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    fn read_config() -> String {
        std::fs::read_to_string("app.toml").unwrap_or_default()
    }
    let _ = read_config();
    Ok(())
}

fn main() {}
