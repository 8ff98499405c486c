use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

// Both `cfg`s hold in a debug build: two operations named `get`.
#[entity]
impl Counter {
    #[cfg(debug_assertions)]
    fn get(&self) -> i64 {
        self.value
    }

    #[cfg(any(debug_assertions, test))]
    fn get(&self) -> i64 {
        -self.value
    }
}

fn main() {}
