use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Greeter {
    name: String,
}

#[entity]
impl Greeter {
    fn rename(&mut self, name: &str) {
        self.name = name.to_owned();
    }
}

fn main() {}
