use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity(rename = "counter")]
impl Counter {
    fn get(&self) -> i64 {
        self.value
    }
}

fn main() {}
