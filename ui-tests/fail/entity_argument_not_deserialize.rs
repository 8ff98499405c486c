use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[derive(Serialize)]
struct Amount(i64);

#[entity]
impl Counter {
    fn add(&mut self, amount: Amount) {
        self.value += amount.0;
    }
}

fn main() {}
