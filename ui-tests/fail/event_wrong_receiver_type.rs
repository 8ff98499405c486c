use durable::prelude::*;

const APPROVAL: ExternalEvent<bool> = ExternalEvent::new("Approval");

#[orchestrator]
async fn expense(ctx: OrchestrationContext) -> Result<String, Error> {
    // The waiter gets the event's type, not one it picks.
    let verdict: String = ctx.wait_for_event(APPROVAL).await?;
    Ok(verdict)
}

fn main() {}
