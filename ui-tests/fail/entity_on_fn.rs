use durable::prelude::*;

#[entity]
fn add(amount: i64) -> i64 {
    amount + 1
}

fn main() {}
