use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add<N: Into<i64>>(&mut self, amount: N) {
        self.value += amount.into();
    }
}

fn main() {}
