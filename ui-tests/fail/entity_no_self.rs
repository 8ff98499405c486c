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

    fn with_value(value: i64) -> Counter {
        Counter { value }
    }
}

fn main() {}
