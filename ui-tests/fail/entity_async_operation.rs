use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    async fn add(&mut self, amount: i64) {
        self.value += amount;
    }
}

fn main() {}
