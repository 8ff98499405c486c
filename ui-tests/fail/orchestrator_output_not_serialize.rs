use durable::prelude::*;

#[derive(serde::Deserialize)]
struct Report {
    total: u64,
}

#[orchestrator]
async fn report(_ctx: OrchestrationContext) -> Result<Report, Error> {
    Ok(Report { total: 1 })
}

fn main() {}
