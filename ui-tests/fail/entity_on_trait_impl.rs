use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Default for Counter {
    fn default() -> Self {
        Counter { value: 1 }
    }
}

fn main() {}
