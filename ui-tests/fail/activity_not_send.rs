use durable::prelude::*;
use std::rc::Rc;

#[activity]
async fn hold_rc(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    let shared = Rc::new(x);
    tokio::task::yield_now().await;
    Ok(*shared)
}

fn main() {}
