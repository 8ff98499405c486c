use durable::prelude::*;

struct Opaque;

#[activity]
async fn take(_ctx: ActivityContext, value: Opaque) -> Result<u64, Error> {
    let _ = value;
    Ok(1)
}

fn main() {}
