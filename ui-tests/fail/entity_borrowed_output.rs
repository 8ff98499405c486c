use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Greeter {
    name: String,
}

#[entity]
impl Greeter {
    fn name(&self) -> &str {
        &self.name
    }
}

fn main() {}
