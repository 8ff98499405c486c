use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn into_value(self) -> i64 {
        self.value
    }
}

fn main() {}
