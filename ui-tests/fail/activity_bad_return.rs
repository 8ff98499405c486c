use durable::prelude::*;

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> u64 {
    x + 1
}

fn main() {}
