use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

struct Snapshot {
    value: i64,
}

#[entity]
impl Counter {
    fn snapshot(&self) -> Snapshot {
        Snapshot { value: self.value }
    }
}

fn main() {}
