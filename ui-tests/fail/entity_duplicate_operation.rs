use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn get(&self) -> i64 {
        self.value
    }

    fn get(&self) -> u64 {
        self.value as u64
    }
}

fn main() {}
