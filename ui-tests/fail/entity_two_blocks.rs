use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.value += amount;
    }
}

#[entity]
impl Counter {
    fn get(&self) -> i64 {
        self.value
    }
}

fn main() {}
