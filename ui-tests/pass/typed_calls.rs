//! What must keep compiling: typed calls, custom names, unit inputs, tuple inputs, any
//! error type that converts into `durable::Error`, non-Send orchestrator state.
use durable::prelude::*;
use std::rc::Rc;

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[activity(name = "F2")]
async fn io_step(_ctx: ActivityContext, (a, b): (u64, String)) -> Result<String, std::io::Error> {
    Ok(format!("{a}{b}"))
}

#[activity]
async fn no_input(ctx: ActivityContext) -> Result<String, String> {
    Ok(ctx.idempotency_key())
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<String, Error> {
    let local = Rc::new(x); // orchestrators need not be Send
    let a = ctx.call_activity(add_one, *local).await?;
    let b = ctx.call_activity(io_step, (a, "!".to_owned())).await?;
    let c = ctx.call_activity(no_input, ()).await?;
    let all = ctx.join_all(vec![ctx.call_activity(add_one, 1), ctx.call_activity(add_one, 2)]).await?;
    Ok(format!("{b}{c}{}", all.len()))
}

#[orchestrator]
async fn parent(ctx: OrchestrationContext) -> Result<String, Error> {
    ctx.call_sub_orchestrator(chain, 1).await
}

async fn start(client: Client) -> Result<String, Box<dyn std::error::Error>> {
    let instance = client.start(chain, 1).await?;
    let out: String = instance.wait(std::time::Duration::from_secs(1)).await?;
    client.start(parent, ()).await?;
    Ok(out)
}

fn main() {
    assert_eq!(<io_step as Activity>::NAME, "F2");
    let _ = start;
}
