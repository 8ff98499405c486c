use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[entity]
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

fn main() {}
