use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64, ctx: &EntityContext) {
        let _ = ctx;
        self.value += amount;
    }
}

fn main() {}
