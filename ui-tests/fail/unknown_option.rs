use durable::prelude::*;

#[activity(label = "x")]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

fn main() {}
